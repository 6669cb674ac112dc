//! `Histogram`: latencies in nanoseconds, recorded in O(1) into log-linear
//! buckets (32 per power of two, so any percentile is within about 3% of
//! the truth), read back as percentiles. No clock, no I/O.

/// Sub-buckets per power of two, as a bit count: 2^5 = 32.
const SUB_BITS: u32 = 5;
const SUB: u64 = 1 << SUB_BITS;
/// Enough buckets for any `u64`: values below `SUB` exactly, then 32 per
/// power of two up to 2^63.
const BUCKETS: usize = ((64 - SUB_BITS as usize) + 1) * SUB as usize;

/// A latency histogram.
#[derive(Clone, Debug)]
pub struct Histogram {
    counts: Vec<u64>,
    total: u64,
    max: u64,
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram {
            counts: vec![0; BUCKETS],
            total: 0,
            max: 0,
        }
    }
}

fn index(v: u64) -> usize {
    if v < SUB {
        return v as usize;
    }
    let msb = 63 - v.leading_zeros();
    let shift = msb - SUB_BITS;
    (((shift + 1) as u64) * SUB + ((v >> shift) & (SUB - 1))) as usize
}

/// The largest value that lands in bucket `i`, so a percentile is never
/// reported lower than it was.
fn upper(i: usize) -> u64 {
    let i = i as u64;
    if i < SUB {
        return i;
    }
    let shift = i / SUB - 1;
    let sub = i % SUB;
    ((SUB + sub + 1) << shift) - 1
}

impl Histogram {
    pub fn record(&mut self, v: u64) {
        self.counts[index(v)] += 1;
        self.total += 1;
        self.max = self.max.max(v);
    }

    pub fn count(&self) -> u64 {
        self.total
    }

    pub fn max(&self) -> u64 {
        self.max
    }

    /// The value at or below which a fraction `p` (0 to 1) of the samples
    /// lie; 0 when there are none.
    pub fn percentile(&self, p: f64) -> u64 {
        if self.total == 0 {
            return 0;
        }
        let rank = ((p * self.total as f64).ceil() as u64).clamp(1, self.total);
        let mut seen = 0;
        for (i, &c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                return upper(i).min(self.max);
            }
        }
        self.max
    }

    pub fn merge(&mut self, other: &Histogram) {
        for (a, b) in self.counts.iter_mut().zip(&other.counts) {
            *a += b;
        }
        self.total += other.total;
        self.max = self.max.max(other.max);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_values_are_exact() {
        let mut h = Histogram::default();
        for v in 0..10 {
            h.record(v);
        }
        assert_eq!(h.percentile(0.5), 4);
        assert_eq!(h.percentile(1.0), 9);
        assert_eq!(h.max(), 9);
    }

    #[test]
    fn every_bucket_holds_its_own_values() {
        for v in [32u64, 33, 63, 64, 65, 1000, 123_456_789, u64::MAX / 3] {
            let i = index(v);
            assert!(upper(i) >= v, "{v} above its bucket's top {}", upper(i));
            if i > 0 {
                assert!(upper(i - 1) < v, "{v} also fits bucket {}", i - 1);
            }
        }
        assert!(index(u64::MAX) < BUCKETS);
    }

    #[test]
    fn percentiles_are_within_a_few_percent() {
        let mut h = Histogram::default();
        for v in 1..=100_000u64 {
            h.record(v * 1000);
        }
        for (p, want) in [
            (0.5, 50_000_000.0),
            (0.9, 90_000_000.0),
            (0.99, 99_000_000.0),
        ] {
            let got = h.percentile(p) as f64;
            assert!((got - want).abs() / want < 0.035, "p{p}: {got} vs {want}");
        }
        assert_eq!(h.percentile(1.0), 100_000_000);
    }

    #[test]
    fn empty_and_merged() {
        let mut a = Histogram::default();
        assert_eq!(a.percentile(0.99), 0);
        let mut b = Histogram::default();
        b.record(7);
        a.merge(&b);
        assert_eq!((a.count(), a.max()), (1, 7));
    }
}
