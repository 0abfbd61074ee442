//! The live IOReport reader (macOS only): subscribes to the "Energy Model" channel group and
//! turns each sample's deltas into a running energy total, with no sudo. The FFI follows the
//! private IOReport API as macmon uses it; the values go through the tested
//! [`super::ioreport::soc_energy_j`].

use super::ioreport::{Channel, soc_energy_j};
use super::{PowerKind, PowerScope, PowerSource, Reading};
use core_foundation::base::TCFType;
use core_foundation::string::{CFString, CFStringRef};
use core_foundation_sys::array::{CFArrayGetCount, CFArrayGetValueAtIndex, CFArrayRef};
use core_foundation_sys::base::{CFRelease, CFTypeRef, kCFAllocatorDefault};
use core_foundation_sys::dictionary::{
    CFDictionaryCreateMutableCopy, CFDictionaryGetCount, CFDictionaryGetValue, CFDictionaryRef, CFMutableDictionaryRef,
};
use std::ffi::c_void;
use std::ptr::{null, null_mut};

#[link(name = "IOReport", kind = "dylib")]
unsafe extern "C" {
    fn IOReportCopyChannelsInGroup(
        group: CFStringRef,
        subgroup: CFStringRef,
        a: u64,
        b: u64,
        c: u64,
    ) -> CFDictionaryRef;
    fn IOReportCreateSubscription(
        a: *const c_void,
        channels: CFMutableDictionaryRef,
        out: *mut CFMutableDictionaryRef,
        d: u64,
        e: CFTypeRef,
    ) -> *const c_void;
    fn IOReportCreateSamples(
        subscription: *const c_void,
        channels: CFMutableDictionaryRef,
        c: CFTypeRef,
    ) -> CFDictionaryRef;
    fn IOReportCreateSamplesDelta(a: CFDictionaryRef, b: CFDictionaryRef, c: CFTypeRef) -> CFDictionaryRef;
    fn IOReportChannelGetGroup(item: CFDictionaryRef) -> CFStringRef;
    fn IOReportChannelGetChannelName(item: CFDictionaryRef) -> CFStringRef;
    fn IOReportChannelGetUnitLabel(item: CFDictionaryRef) -> CFStringRef;
    fn IOReportSimpleGetIntegerValue(item: CFDictionaryRef, index: i32) -> i64;
}

fn to_string(s: CFStringRef) -> String {
    if s.is_null() {
        return String::new();
    }
    // SAFETY: a non-null CFString owned by the sample; the get rule retains it for the wrapper.
    unsafe { CFString::wrap_under_get_rule(s) }.to_string()
}

/// A subscription to the Energy Model channels, and the energy summed so far.
pub struct IoReport {
    subscription: *const c_void,
    channels: CFMutableDictionaryRef,
    previous: CFDictionaryRef,
    total_j: f64,
}

// SAFETY: the CoreFoundation objects are only touched by whichever single thread owns the
// source (the sampler thread); CF reference counting is thread-safe.
unsafe impl Send for IoReport {}

impl IoReport {
    /// Subscribes to the Energy Model group and takes a first sample.
    pub fn open() -> Result<Self, String> {
        let group = CFString::new("Energy Model");
        // SAFETY: plain calls into IOReport; every returned object is checked and released.
        unsafe {
            let found = IOReportCopyChannelsInGroup(group.as_concrete_TypeRef(), null(), 0, 0, 0);
            if found.is_null() {
                return Err("IOReport has no Energy Model channels on this Mac".into());
            }
            let channels = CFDictionaryCreateMutableCopy(kCFAllocatorDefault, CFDictionaryGetCount(found), found);
            CFRelease(found as CFTypeRef);
            let mut out: CFMutableDictionaryRef = null_mut();
            let subscription = IOReportCreateSubscription(null(), channels, &mut out, 0, null());
            if subscription.is_null() {
                CFRelease(channels as CFTypeRef);
                return Err("IOReport refused the subscription".into());
            }
            let previous = IOReportCreateSamples(subscription, channels, null());
            if previous.is_null() {
                CFRelease(channels as CFTypeRef);
                CFRelease(subscription as CFTypeRef);
                return Err("IOReport gave no first sample".into());
            }
            let mut me = Self { subscription, channels, previous, total_j: 0.0 };
            // One delta now, so a source that cannot be read is refused at discovery.
            me.delta().map_err(|e| format!("IOReport sample: {e}"))?;
            Ok(me)
        }
    }

    /// The Energy Model channels' deltas since the previous call.
    fn delta(&mut self) -> Result<Vec<Channel>, String> {
        // SAFETY: as in `open`; the delta and the replaced sample are released here.
        unsafe {
            let next = IOReportCreateSamples(self.subscription, self.channels, null());
            if next.is_null() {
                return Err("IOReport gave no sample".into());
            }
            let delta = IOReportCreateSamplesDelta(self.previous, next, null());
            CFRelease(self.previous as CFTypeRef);
            self.previous = next;
            if delta.is_null() {
                return Err("IOReport gave no sample delta".into());
            }
            let key = CFString::new("IOReportChannels");
            let items = CFDictionaryGetValue(delta, key.as_concrete_TypeRef() as *const c_void) as CFArrayRef;
            let mut channels = Vec::new();
            if !items.is_null() {
                for i in 0..CFArrayGetCount(items) {
                    let item = CFArrayGetValueAtIndex(items, i) as CFDictionaryRef;
                    channels.push(Channel {
                        group: to_string(IOReportChannelGetGroup(item)),
                        name: to_string(IOReportChannelGetChannelName(item)),
                        unit: to_string(IOReportChannelGetUnitLabel(item)),
                        value: IOReportSimpleGetIntegerValue(item, 0),
                    });
                }
            }
            CFRelease(delta as CFTypeRef);
            Ok(channels)
        }
    }
}

impl PowerSource for IoReport {
    fn kind(&self) -> PowerKind {
        PowerKind::AppleIoreport
    }

    fn scope(&self) -> PowerScope {
        PowerScope::Soc
    }

    fn name(&self) -> String {
        "IOReport Energy Model (CPU+GPU+ANE+DRAM)".into()
    }

    fn read(&mut self) -> std::io::Result<Reading> {
        let channels = self.delta().map_err(std::io::Error::other)?;
        self.total_j += soc_energy_j(&channels).map_err(std::io::Error::other)?;
        Ok(Reading::EnergyJ(self.total_j))
    }
}

impl Drop for IoReport {
    fn drop(&mut self) {
        // SAFETY: each object was created by this struct and is released once.
        unsafe {
            CFRelease(self.previous as CFTypeRef);
            CFRelease(self.channels as CFTypeRef);
            CFRelease(self.subscription as CFTypeRef);
        }
    }
}
