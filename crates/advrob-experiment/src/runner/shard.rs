//! Shards: a deterministic share of a matrix's evaluations, for the tasks of a job array.

use crate::error::{ExperimentError, Result};

/// A deterministic share of a matrix's evaluations: the units of work — one (dataset, backend,
/// seed, model, attack) with its whole ε grid — are numbered in the matrix's order, and shard
/// `index` of `count` takes those whose number is `index` modulo `count`. Every run of the same
/// matrix gives every shard the same units; together the shards cover each unit exactly once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    /// This shard, from 0.
    pub index: usize,
    /// How many shards there are.
    pub count: usize,
}

impl Shard {
    /// Parses `i/n` (0 ≤ i < n).
    pub fn parse(s: &str) -> Result<Self> {
        let bad = || ExperimentError::invalid("shard", format!("{s:?} is not i/n with 0 ≤ i < n"));
        let (i, n) = s.split_once('/').ok_or_else(bad)?;
        let (index, count) = (
            i.trim().parse::<usize>().map_err(|_| bad())?,
            n.trim().parse::<usize>().map_err(|_| bad())?,
        );
        if count == 0 || index >= count {
            return Err(bad());
        }
        Ok(Self { index, count })
    }

    /// Whether unit `unit` is this shard's.
    pub fn owns(&self, unit: usize) -> bool {
        unit % self.count == self.index
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_parse_and_refuse_what_is_not_i_of_n() {
        assert_eq!(Shard::parse("1/3").ok(), Some(Shard { index: 1, count: 3 }));
        assert_eq!(
            Shard::parse(" 0 / 1 ").ok(),
            Some(Shard { index: 0, count: 1 })
        );
        for bad in ["3/3", "0/0", "1", "a/2", "-1/2", ""] {
            let e = Shard::parse(bad).expect_err(bad).to_string();
            assert!(e.contains("shard") && e.contains("i/n"), "{bad}: {e}");
        }
    }

    #[test]
    fn every_unit_belongs_to_exactly_one_shard() {
        for count in 1..6 {
            for unit in 0..50 {
                let owners = (0..count)
                    .filter(|&index| Shard { index, count }.owns(unit))
                    .count();
                assert_eq!(owners, 1, "unit {unit} of {count} shards");
            }
        }
    }
}
