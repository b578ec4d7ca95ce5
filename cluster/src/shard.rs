//! Documents onto virtual shards: a stable hash every node and every version computes alike.

/// The number of virtual shards a cluster is made with, unless configured (fixed for the
/// cluster's life: a document's shard never changes).
pub const DEFAULT_SHARDS: u16 = 1024;

/// A virtual shard: a slice of the documents that one node owns at a time.
pub type Shard = u16;

/// FNV-1a, 64 bits: small, stable across platforms and releases (unlike a seeded hasher),
/// and spread well enough over short ids (checked in the tests).
fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// The shard of a document, of `shards` (at least 1).
pub fn shard_of(doc: &str, shards: u16) -> Shard {
    (fnv1a(doc.as_bytes()) % u64::from(shards.max(1))) as Shard
}

/// How much `node` wants `shard` (rendezvous hashing): the live node that wants a shard most
/// is its preferred owner, so shards move only when the set of nodes changes, and then only
/// the shards of the node that came or went.
pub fn affinity(node: &str, shard: Shard) -> u64 {
    let mut bytes = Vec::with_capacity(node.len() + 2);
    bytes.extend_from_slice(node.as_bytes());
    bytes.extend_from_slice(&shard.to_le_bytes());
    // FNV mixes its last bytes weakly: finish with a multiply-xorshift (splitmix64's).
    let mut z = fnv1a(&bytes);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_are_stable_and_spread() {
        // Fixed values: changing the hash would move every document of a running cluster.
        assert_eq!(shard_of("", 1024), (0xcbf2_9ce4_8422_2325u64 % 1024) as u16);
        assert_eq!(shard_of("room-0", 1024), shard_of("room-0", 1024));
        assert_eq!(shard_of("anything", 1), 0);
        let mut counts = vec![0u32; 64];
        for i in 0..64_000 {
            counts[usize::from(shard_of(&format!("doc-{i}"), 64))] += 1;
        }
        let (min, max) = (counts.iter().min().unwrap(), counts.iter().max().unwrap());
        assert!(*min > 850 && *max < 1150, "uneven: {min}..{max}");
    }

    #[test]
    fn affinity_spreads_shards_over_nodes() {
        let nodes = ["node-a", "node-b", "node-c"];
        let mut won = [0u32; 3];
        for s in 0..1024 {
            let best = (0..3).max_by_key(|&i| affinity(nodes[i], s)).unwrap();
            won[best] += 1;
        }
        assert!(won.iter().all(|&w| (280..400).contains(&w)), "{won:?}");
    }
}
