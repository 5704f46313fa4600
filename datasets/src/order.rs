//! The order in which a split's items are taken when only some of them are used: a seeded shuffle,
//! stratified by label where there are labels.
//!
//! Files are listed class by class (the Knee-OA layout is `test/0 … test/4`), so taking "the first N"
//! of a listing takes the lowest grades only. Every place that keeps a prefix of a split (a
//! `test_size` limit, an evaluation's `test_images`) takes it in this order instead, which puts every
//! label in every prefix in proportion to its share of the split.

use crate::rng::{tag, StreamRng};

/// A permutation of `0..labels.len()` whose every prefix holds each label in proportion to its count
/// (to within one item per label), random within each label, the same for the same seed and purpose.
/// Items without a label form one group of their own; with no labels at all this is a plain shuffle.
///
/// Construction (proportional, or systematic, stratified sampling): each label's items are shuffled
/// (Fisher–Yates), the j-th of a label with n items gets the position (j + ½)/n in [0, 1), and all
/// items are sorted by position, ties by label. A prefix up to position t then holds ⌊t·n + ½⌋ items
/// of each label.
pub fn stratified_order(labels: &[Option<u32>], seed: u64, purpose: &str) -> Vec<usize> {
    let mut groups: std::collections::BTreeMap<Option<u32>, Vec<usize>> = std::collections::BTreeMap::new();
    for (i, l) in labels.iter().enumerate() {
        groups.entry(*l).or_default().push(i);
    }
    let mut keyed: Vec<(f64, usize, usize)> = Vec::with_capacity(labels.len());
    for (g, (label, mut items)) in groups.into_iter().enumerate() {
        let key = label.map_or(u64::MAX, u64::from);
        let mut rng = StreamRng::new(seed, &[tag(purpose), key]);
        for i in (1..items.len()).rev() {
            items.swap(i, rng.below(i + 1));
        }
        let n = items.len() as f64;
        keyed.extend(items.into_iter().enumerate().map(|(j, item)| ((j as f64 + 0.5) / n, g, item)));
    }
    keyed.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
    keyed.into_iter().map(|(_, _, item)| item).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_prefix_holds_each_label_in_proportion() {
        // 60 of label 0, 30 of label 1, 10 of label 2, listed class by class.
        let labels: Vec<Option<u32>> = [(0, 60), (1, 30), (2, 10)].iter().flat_map(|&(l, n)| vec![Some(l); n]).collect();
        let order = stratified_order(&labels, 7, "test");
        let mut sorted = order.clone();
        sorted.sort();
        assert_eq!(sorted, (0..100).collect::<Vec<_>>(), "a permutation");
        for k in 1..=100 {
            let mut counts = [0usize; 3];
            for &i in &order[..k] {
                counts[labels[i].unwrap() as usize] += 1;
            }
            for (l, share) in [0.6, 0.3, 0.1].into_iter().enumerate() {
                assert!((counts[l] as f64 - share * k as f64).abs() <= 1.0, "prefix {k}: {counts:?}");
            }
        }
        assert_eq!(order, stratified_order(&labels, 7, "test"), "same seed, same order");
        assert_ne!(order, stratified_order(&labels, 8, "test"));
        // Random within a label: label 0's items do not come in listing order.
        let zeros: Vec<usize> = order.iter().copied().filter(|&i| i < 60).collect();
        assert_ne!(zeros, (0..60).collect::<Vec<_>>());
    }

    #[test]
    fn without_labels_it_is_a_plain_shuffle() {
        let order = stratified_order(&[None; 50], 1, "test");
        let mut sorted = order.clone();
        sorted.sort();
        assert_eq!(sorted, (0..50).collect::<Vec<_>>());
        assert_ne!(order, sorted);
    }
}
