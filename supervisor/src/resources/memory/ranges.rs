//! Sets of address ranges `[start, end)`, kept sorted and disjoint: what
//! the dirty tracker, the pre-copy and the capture say about pages.

/// Sorts and joins adjacent ranges.
pub(crate) fn merge(mut v: Vec<(u64, u64)>) -> Vec<(u64, u64)> {
    v.sort_unstable();
    let mut out: Vec<(u64, u64)> = Vec::with_capacity(v.len());
    for (s, e) in v {
        match out.last_mut() {
            Some(last) if last.1 >= s => last.1 = last.1.max(e),
            _ => out.push((s, e)),
        }
    }
    out
}

/// `a` less `b`; both sorted and disjoint, the result too.
pub(crate) fn subtract(a: &[(u64, u64)], b: &[(u64, u64)]) -> Vec<(u64, u64)> {
    let mut out = Vec::with_capacity(a.len());
    let mut j = 0;
    for &(s, e) in a {
        let mut from = s;
        while j < b.len() && b[j].1 <= from {
            j += 1;
        }
        let mut k = j;
        while k < b.len() && b[k].0 < e {
            if b[k].0 > from {
                out.push((from, b[k].0));
            }
            from = from.max(b[k].1);
            k += 1;
        }
        if from < e {
            out.push((from, e));
        }
    }
    out
}

/// `a` and `b`; both sorted and disjoint, the result too.
pub(crate) fn intersect(a: &[(u64, u64)], b: &[(u64, u64)]) -> Vec<(u64, u64)> {
    let mut out = Vec::new();
    let (mut i, mut j) = (0, 0);
    while i < a.len() && j < b.len() {
        let s = a[i].0.max(b[j].0);
        let e = a[i].1.min(b[j].1);
        if s < e {
            out.push((s, e));
        }
        if a[i].1 < b[j].1 {
            i += 1;
        } else {
            j += 1;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn range_sets() {
        let a = merge(vec![(0, 10), (5, 20), (20, 30), (40, 50)]);
        assert_eq!(a, vec![(0, 30), (40, 50)]);
        assert_eq!(
            subtract(&a, &[(2, 4), (25, 45), (49, 60)]),
            vec![(0, 2), (4, 25), (45, 49)]
        );
        assert_eq!(subtract(&a, &[]), a);
        assert_eq!(
            intersect(&a, &[(2, 4), (25, 45), (49, 60)]),
            vec![(2, 4), (25, 30), (40, 45), (49, 50)]
        );
        assert!(intersect(&a, &[(30, 40)]).is_empty());
    }
}
