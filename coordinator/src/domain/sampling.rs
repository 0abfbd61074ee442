//! Seeded sampling: how a stratified sample divides among categories. The seeded order itself
//! is SQL (see `store::runs::sample`).

/// How many queries each category gets in a stratified sample of `n`: its share of the
/// workload, rounded by largest remainder so the quotas add up to `n` exactly. Ties go to the
/// category that sorts first, so the result is deterministic.
pub fn stratified_quotas(counts: &[(String, i64)], n: i64) -> Vec<(String, i64)> {
    let total: i64 = counts.iter().map(|(_, c)| c).sum();
    if total == 0 {
        return Vec::new();
    }
    let n = n.min(total);
    let mut quotas: Vec<(String, i64, i64)> = counts
        .iter()
        .map(|(category, c)| (category.clone(), c * n / total, (c * n) % total)) // floor, remainder
        .collect();
    let mut missing = n - quotas.iter().map(|q| q.1).sum::<i64>();
    let mut order: Vec<usize> = (0..quotas.len()).collect();
    order.sort_by(|&a, &b| quotas[b].2.cmp(&quotas[a].2).then(quotas[a].0.cmp(&quotas[b].0)));
    for i in order {
        if missing == 0 {
            break;
        }
        if quotas[i].1 < counts[i].1 {
            quotas[i].1 += 1;
            missing -= 1;
        }
    }
    quotas.into_iter().map(|(c, q, _)| (c, q)).collect()
}

#[cfg(test)]
mod tests {
    use super::stratified_quotas;

    fn c(pairs: &[(&str, i64)]) -> Vec<(String, i64)> {
        pairs.iter().map(|(k, v)| ((*k).to_owned(), *v)).collect()
    }

    #[test]
    fn quotas_follow_the_shares_and_add_up() {
        let q = stratified_quotas(&c(&[("law", 600), ("math", 300), ("other", 100)]), 50);
        assert_eq!(q, c(&[("law", 30), ("math", 15), ("other", 5)]));
        // 10 over three equal categories: remainders tie, the first sorted gets the extra.
        let q = stratified_quotas(&c(&[("a", 5), ("b", 5), ("c", 5)]), 10);
        assert_eq!(q, c(&[("a", 4), ("b", 3), ("c", 3)]));
        assert_eq!(q.iter().map(|x| x.1).sum::<i64>(), 10);
    }

    #[test]
    fn small_categories_are_not_over_asked() {
        let q = stratified_quotas(&c(&[("big", 997), ("tiny", 3)]), 100);
        assert_eq!(q.iter().map(|x| x.1).sum::<i64>(), 100);
        assert!(q[1].1 <= 3);
        assert_eq!(stratified_quotas(&c(&[("a", 2)]), 10), c(&[("a", 2)]));
    }
}
