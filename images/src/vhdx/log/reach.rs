//! Which log entry leads to which, answered in constant time per question.
//!
//! Each valid entry links to at most one next entry: the valid entry that starts where it
//! ends, if that one's sequence number is one higher. Following a link raises the sequence
//! number by one, so no walk returns to an entry it left: the links form a forest whose roots
//! are the entries that link nowhere. "Walking the links from `T` reaches `H`" is then "`H` is
//! `T` or an ancestor of it", which one depth-first pass over the forest answers for every
//! pair: `T`'s visit falls within `H`'s. The bytes walked from `T` to `H` are the difference of
//! the bytes from each of them to the end of its walk. Building all this follows every link
//! once: linear in the number of sectors.

use super::Work;

/// The forest of links, visited once.
pub(super) struct Reach {
    /// `span[s]`: when the depth-first pass entered and left sector `s` (`None`: never
    /// visited, which only an inconsistent `next` could cause; such a sector reaches nothing).
    span: Vec<Option<(usize, usize)>>,
    /// `to_end[s]`: bytes of the entries on the walk from `s` to the end of its links,
    /// both included.
    to_end: Vec<u64>,
}

impl Reach {
    /// `next[s]`: the sector that the entry at sector `s` links to; `length[s]`: that entry's
    /// length in bytes (0 where no entry starts). Both have one element per log sector, and
    /// following `next` must never come back to a sector (sequence numbers see to that).
    pub(super) fn new(next: &[Option<usize>], length: &[u64], work: &mut Work) -> Reach {
        let sectors = next.len();
        // The sectors linking to each sector p: linked_from[first[p]..first[p + 1]].
        let mut first = vec![0usize; sectors + 1];
        for &to in next.iter().flatten() {
            first[to + 1] += 1;
        }
        for s in 0..sectors {
            first[s + 1] += first[s];
        }
        let mut fill = first.clone();
        let mut linked_from = vec![0usize; first[sectors]];
        for (from, to) in next.iter().enumerate() {
            if let Some(to) = *to {
                linked_from[fill[to]] = from;
                fill[to] += 1;
            }
        }

        let mut span = vec![None; sectors];
        let mut enter = vec![0usize; sectors];
        let mut to_end = vec![0u64; sectors];
        let mut clock = 0usize;
        // (sector, position in linked_from of the next one to visit)
        let mut stack: Vec<(usize, usize)> = Vec::new();
        for root in (0..sectors).filter(|&s| next[s].is_none()) {
            enter[root] = clock;
            clock += 1;
            to_end[root] = length[root];
            stack.push((root, first[root]));
            while let Some(&(sector, at)) = stack.last() {
                if at < first[sector + 1] {
                    if let Some(top) = stack.last_mut() {
                        top.1 += 1;
                    }
                    let from = linked_from[at];
                    work.links_followed += 1;
                    enter[from] = clock;
                    clock += 1;
                    to_end[from] = length[from].saturating_add(to_end[sector]);
                    stack.push((from, first[from]));
                } else {
                    span[sector] = Some((enter[sector], clock));
                    clock += 1;
                    stack.pop();
                }
            }
        }
        Reach { span, to_end }
    }

    /// Whether following links from the entry at `from` reaches the one at `to` (or `from` is
    /// `to`).
    pub(super) fn leads_to(&self, from: usize, to: usize) -> bool {
        match (self.span.get(from), self.span.get(to)) {
            (Some(Some((from_in, from_out))), Some(Some((to_in, to_out)))) => {
                to_in <= from_in && from_out <= to_out
            }
            _ => false,
        }
    }

    /// Bytes of the entries walked from `from` up to, not including, `to`, for a `from` that
    /// [leads to](Reach::leads_to) `to`.
    pub(super) fn bytes_before(&self, from: usize, to: usize) -> u64 {
        let from = self.to_end.get(from).copied().unwrap_or(0);
        let to = self.to_end.get(to).copied().unwrap_or(0);
        from.saturating_sub(to)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Walks `next` from `from` the slow way.
    fn walk(next: &[Option<usize>], from: usize, to: usize) -> Option<usize> {
        let mut at = from;
        for steps in 0..=next.len() {
            if at == to {
                return Some(steps);
            }
            at = next[at]?;
        }
        None
    }

    #[test]
    fn answers_like_walking_the_links() {
        // Two chains merging (0 → 1 → 2 → 3 and 5 → 6 → 2), a lone entry (4), a branch off
        // the end (7 → 3) and nothing at 8.
        let next = [
            Some(1),
            Some(2),
            Some(3),
            None,
            None,
            Some(6),
            Some(2),
            Some(3),
            None,
        ];
        let length: Vec<u64> = (0..next.len() as u64).map(|s| 4096 * (s + 1)).collect();
        let mut work = Work::default();
        let reach = Reach::new(&next, &length, &mut work);
        assert_eq!(work.links_followed, 6, "each link followed once");
        for from in 0..next.len() {
            for to in 0..next.len() {
                let steps = walk(&next, from, to);
                assert_eq!(reach.leads_to(from, to), steps.is_some(), "{from} → {to}");
                if steps.is_some() {
                    let mut bytes = 0;
                    let mut at = from;
                    while at != to {
                        bytes += length[at];
                        at = next[at].unwrap_or(to);
                    }
                    assert_eq!(reach.bytes_before(from, to), bytes, "{from} → {to}");
                }
            }
        }
    }

    #[test]
    fn a_cycle_reaches_nothing() {
        let reach = Reach::new(&[Some(1), Some(0)], &[4096, 4096], &mut Work::default());
        assert!(!reach.leads_to(0, 1));
        assert!(!reach.leads_to(0, 0));
    }
}
