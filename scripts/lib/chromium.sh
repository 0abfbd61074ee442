# Headless Chromium for the browser tests (tests/browser.rs), for scripts/test. Source this
# file, then `chromium_ensure_installed`: it installs Debian's Chromium when none is found and
# we can (root with apt-get), and exports IPW_TEST_CHROMIUM. When it cannot, it prints how to
# install Chromium and leaves IPW_TEST_CHROMIUM unset, so every browser test fails with the
# same advice: CI never skips them.

chromium_find() {
  local name
  if [[ -n ${IPW_TEST_CHROMIUM:-} ]]; then
    [[ -x $IPW_TEST_CHROMIUM ]] && { echo "$IPW_TEST_CHROMIUM"; return; }
    echo "IPW_TEST_CHROMIUM=$IPW_TEST_CHROMIUM is not an executable" >&2
    return 1
  fi
  for name in chromium chromium-browser google-chrome-stable google-chrome; do
    command -v "$name" && return
  done
  return 1
}

chromium_install_hint() {
  cat >&2 <<'HINT'
No Chromium was found, so the browser tests (tests/browser.rs) will fail.
Install it, for example:
  Debian/Ubuntu (as root):  apt-get install -y --no-install-recommends chromium fonts-liberation
  Fedora:                   dnf install -y chromium liberation-fonts
or point IPW_TEST_CHROMIUM at a Chromium or Chrome binary.
HINT
}

# chromium_ensure_installed: finds Chromium (installing it when missing, as root on a system
# with apt-get) and exports IPW_TEST_CHROMIUM. Never fails: a missing Chromium fails the tests.
chromium_ensure_installed() {
  local found
  found=$(chromium_find) || found=
  if [[ -z $found && -z ${IPW_TEST_CHROMIUM:-} && $(id -u) == 0 ]] && command -v apt-get >/dev/null; then
    echo "installing Chromium (apt-get install chromium fonts-liberation)" >&2
    # Without recommends: 25 packages rather than 115.
    if apt-get update -qq >&2 && DEBIAN_FRONTEND=noninteractive \
      apt-get install -y -qq --no-install-recommends chromium fonts-liberation >&2; then
      found=$(chromium_find) || found=
    else
      echo "apt-get could not install Chromium" >&2
    fi
  fi
  if [[ -n $found ]]; then
    export IPW_TEST_CHROMIUM=$found
  else
    unset IPW_TEST_CHROMIUM
    chromium_install_hint
  fi
  return 0
}
