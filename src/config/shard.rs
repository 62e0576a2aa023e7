//! Sharding without a coordinator: `[agent] shard = "k/n"` keeps the
//! targets that rendezvous hashing (highest random weight) gives to shard
//! `k` of `n`, so that N agents given the same target list each watch a
//! disjoint part of it and together watch all of it, and going from N to
//! N+1 agents moves only about 1/(N+1) of the targets (those the new shard
//! wins), without any agent knowing of the others.
//!
//! The hash is fixed here, not `std`'s (whose algorithm may change between
//! Rust releases): agents of different versions in one fleet, or another
//! implementation, must agree on every owner. The weight of shard `j` for a
//! placement key is
//!
//! ```text
//! h = FNV-1a 64 (offset 0xcbf29ce484222325, prime 0x100000001b3)
//!     over the key's UTF-8 bytes, then j as 4 bytes little-endian
//! w = splitmix64's finaliser of h:
//!     h ^= h >> 30; h *= 0xbf58476d1ce4e5b9;
//!     h ^= h >> 27; h *= 0x94d049bb133111eb; h ^= h >> 31
//! ```
//!
//! (wrapping multiplication), and the owner is the shard with the largest
//! weight, the lower `j` on a tie. FNV-1a alone spreads the last bytes
//! badly; the finaliser mixes them into every bit. The placement key of a
//! target is its name, except that targets tied by `depends_on` (an
//! application and its stores) go together, placed by the first name in
//! byte order of their group: an application's recovery can only be
//! measured by the agent that sees its stores' outages.

use std::collections::BTreeMap;
use std::fmt;

use super::{Env, Target};

/// The most shards a fleet may have: far more agents than any target list
/// needs, and each target's owner is `n` hashes.
pub const MAX_SHARDS: u32 = 10_000;

/// Where the kernel keeps the host name (a Kubernetes pod's is its name).
const KERNEL_HOSTNAME: &str = "/proc/sys/kernel/hostname";

/// This agent's part of the target list: shard `index` of `count`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    pub index: u32,
    pub count: u32,
}

impl Default for Shard {
    /// `0/1`: one agent keeps everything.
    fn default() -> Self {
        Self { index: 0, count: 1 }
    }
}

impl fmt::Display for Shard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

impl Shard {
    /// Reads `"k/n"`, or `"ordinal/n"` where `k` is the number a
    /// StatefulSet ends its pods' host names with (`dbcanary-2` → 2): the
    /// `HOSTNAME` variable, else the kernel's host name, up to its first
    /// dot. The reason never says more than the host name.
    pub fn parse(text: &str, env: &dyn Env) -> Result<Self, String> {
        let syntax = || {
            format!(
                "{text:?} is not a shard: write \"k/n\" (shard k of n, 0 <= k < n, e.g. \"0/3\") or \"ordinal/n\" (k from the host name's trailing -<digits>)"
            )
        };
        let (k, n) = text.trim().split_once('/').ok_or_else(syntax)?;
        let count = number(n).ok_or_else(syntax)?;
        if count == 0 {
            return Err(format!("{text:?}: n must be at least 1"));
        }
        if count > MAX_SHARDS {
            return Err(format!("{text:?}: n must be at most {MAX_SHARDS}"));
        }
        let index = if k.trim() == "ordinal" {
            let host = hostname(env).ok_or(
                "\"ordinal/n\" needs the host name, and neither HOSTNAME nor /proc/sys/kernel/hostname gives one",
            )?;
            let ordinal = ordinal(&host).ok_or_else(|| {
                format!(
                    "\"ordinal/n\": the host name {host:?} does not end in -<digits> (as a StatefulSet's pods do, e.g. dbcanary-2); give the shard as \"k/n\""
                )
            })?;
            if ordinal >= count {
                return Err(format!(
                    "the host name {host:?} gives ordinal {ordinal}, which is not below n = {count} (more replicas than shards?)"
                ));
            }
            ordinal
        } else {
            let index = number(k).ok_or_else(syntax)?;
            if index >= count {
                return Err(format!(
                    "{text:?}: k must be below n (shards are numbered 0 to {})",
                    count - 1
                ));
            }
            index
        };
        Ok(Self { index, count })
    }

    /// The shard that owns `key`.
    pub fn owner_of(count: u32, key: &str) -> u32 {
        // Each weight is compared with the best so far: strictly larger
        // wins, so a tie goes to the lower shard.
        (0..count)
            .fold((0, 0), |(best, top), j| {
                let w = weight(key, j);
                if j == 0 || w > top {
                    (j, w)
                } else {
                    (best, top)
                }
            })
            .0
    }

    /// Splits `targets` (every target of every shard, names unique) into
    /// those this shard keeps and how many it leaves to the others, in the
    /// given order.
    pub fn split(&self, targets: Vec<Target>) -> Split {
        if self.count == 1 {
            return Split {
                shard: *self,
                kept: targets,
                left: 0,
            };
        }
        let keep: Vec<bool> = {
            let keys = placement_keys(&targets);
            targets
                .iter()
                .map(|t| {
                    let key = keys.get(t.name.as_str()).copied().unwrap_or(&t.name);
                    Self::owner_of(self.count, key) == self.index
                })
                .collect()
        };
        let total = targets.len();
        let kept: Vec<Target> = targets
            .into_iter()
            .zip(keep)
            .filter_map(|(t, keep)| keep.then_some(t))
            .collect();
        Split {
            shard: *self,
            left: total - kept.len(),
            kept,
        }
    }
}

/// What a shard keeps of a target list.
#[derive(Debug, Clone, PartialEq)]
pub struct Split {
    pub shard: Shard,
    /// The targets this agent watches.
    pub kept: Vec<Target>,
    /// How many it leaves to the other shards.
    pub left: usize,
}

/// A decimal number without sign or spaces inside.
fn number(text: &str) -> Option<u32> {
    let t = text.trim();
    (!t.is_empty() && t.bytes().all(|b| b.is_ascii_digit()))
        .then(|| t.parse().ok())
        .flatten()
}

/// The host name: `HOSTNAME`, else the kernel's; up to its first dot.
fn hostname(env: &dyn Env) -> Option<String> {
    let name = env
        .var("HOSTNAME")
        .filter(|h| !h.trim().is_empty())
        .or_else(|| std::fs::read_to_string(KERNEL_HOSTNAME).ok())?;
    let name = name.trim();
    let name = name.split('.').next().unwrap_or(name);
    (!name.is_empty()).then(|| name.to_string())
}

/// The trailing `-<digits>` of a host name.
fn ordinal(host: &str) -> Option<u32> {
    let (_, digits) = host.rsplit_once('-')?;
    number(digits)
}

/// FNV-1a 64 of the key's bytes and then `j`'s, finalised by splitmix64
/// (see the module's documentation).
pub fn weight(key: &str, j: u32) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in key.bytes().chain(j.to_le_bytes()) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h ^= h >> 30;
    h = h.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h ^= h >> 27;
    h = h.wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^ (h >> 31)
}

/// For each target tied to others by `depends_on`, the first name of its
/// group (targets alone are placed by their own name and are not listed).
fn placement_keys(targets: &[Target]) -> BTreeMap<&str, &str> {
    // Union-find over the names, each group's root its smallest name.
    let mut parent: BTreeMap<&str, &str> = BTreeMap::new();
    fn root<'a>(parent: &BTreeMap<&'a str, &'a str>, mut n: &'a str) -> &'a str {
        while let Some(&p) = parent.get(n) {
            if p == n {
                break;
            }
            n = p;
        }
        n
    }
    for t in targets {
        for dep in &t.depends_on {
            parent.entry(&t.name).or_insert(&t.name);
            parent.entry(dep).or_insert(dep);
            let (a, b) = (root(&parent, &t.name), root(&parent, dep));
            let (low, high) = if a <= b { (a, b) } else { (b, a) };
            parent.insert(high, low);
        }
    }
    parent.keys().map(|&n| (n, root(&parent, n))).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::TargetSource;
    use crate::dburl::DbUrl;
    use crate::settings::CanarySettings;

    struct Host(Option<&'static str>);

    impl Env for Host {
        fn var(&self, name: &str) -> Option<String> {
            (name == "HOSTNAME")
                .then(|| self.0.map(String::from))
                .flatten()
        }
        fn vars(&self) -> Vec<(String, String)> {
            Vec::new()
        }
    }

    fn target(name: &str, depends_on: &[&str]) -> Target {
        let url = if depends_on.is_empty() {
            "redis://127.0.0.1:1"
        } else {
            "http://127.0.0.1:1/health"
        };
        let mut t = Target::from_url(
            name.into(),
            DbUrl::parse(url).unwrap(),
            CanarySettings::default(),
            TargetSource::File,
        )
        .unwrap();
        t.depends_on = depends_on.iter().map(|d| d.to_string()).collect();
        t
    }

    fn names(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("target-{i}")).collect()
    }

    #[test]
    fn the_hash_is_fnv1a_then_splitmix64() {
        // FNV-1a 64's published vectors, before the finaliser: "" is the
        // offset basis, "a" is 0xaf63dc4c8601ec8c.
        let finalise = |mut h: u64| {
            h ^= h >> 30;
            h = h.wrapping_mul(0xbf58_476d_1ce4_e5b9);
            h ^= h >> 27;
            h = h.wrapping_mul(0x94d0_49bb_1331_11eb);
            h ^ (h >> 31)
        };
        let fnv = |bytes: &[u8]| {
            bytes.iter().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
                (h ^ u64::from(*b)).wrapping_mul(0x100_0000_01b3)
            })
        };
        assert_eq!(fnv(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(weight("a", 7), finalise(fnv(b"a\x07\0\0\0")));
        // Pinned owners: a change here reshuffles every fleet during a
        // rolling upgrade, when old and new agents must agree.
        let owners: Vec<u32> = ["cache", "orders", "sessions", "catalog", "billing"]
            .iter()
            .map(|n| Shard::owner_of(5, n))
            .collect();
        assert_eq!(owners, PINNED_OWNERS_OF_5);
        assert_eq!(weight("cache", 0), PINNED_WEIGHT_CACHE_0);
    }

    const PINNED_OWNERS_OF_5: [u32; 5] = [0, 0, 2, 0, 4];
    const PINNED_WEIGHT_CACHE_0: u64 = 0xda72_6874_ac7a_9fbe;

    #[test]
    fn every_name_has_one_owner_and_the_shards_are_even() {
        let names = names(10_000);
        let mut per = [0usize; 5];
        for n in &names {
            per[Shard::owner_of(5, n) as usize] += 1;
        }
        assert_eq!(per.iter().sum::<usize>(), names.len());
        for (j, c) in per.iter().enumerate() {
            assert!(
                (1700..=2300).contains(c),
                "shard {j}/5 got {c} of 10000: {per:?}"
            );
        }
    }

    #[test]
    fn going_from_three_to_four_shards_moves_about_a_quarter_and_only_to_the_new_one() {
        let names = names(10_000);
        let moved: Vec<&String> = names
            .iter()
            .filter(|n| Shard::owner_of(3, n) != Shard::owner_of(4, n))
            .collect();
        let share = moved.len() as f64 / names.len() as f64;
        assert!((0.15..=0.35).contains(&share), "{share} moved");
        assert!(
            moved.iter().all(|n| Shard::owner_of(4, n) == 3),
            "a name moved between old shards"
        );
    }

    #[test]
    fn the_shards_of_a_list_are_disjoint_and_cover_it() {
        let all: Vec<Target> = names(300).iter().map(|n| target(n, &[])).collect();
        let mut seen = std::collections::BTreeSet::new();
        for index in 0..3 {
            let split = Shard { index, count: 3 }.split(all.clone());
            assert_eq!(split.kept.len() + split.left, 300);
            for t in split.kept {
                assert!(seen.insert(t.name.clone()), "{} kept twice", t.name);
            }
        }
        assert_eq!(seen.len(), 300);
        let one = Shard::default().split(all.clone());
        assert_eq!((one.kept, one.left), (all, 0));
    }

    #[test]
    fn an_application_goes_where_its_stores_go() {
        let mut all: Vec<Target> = names(200).iter().map(|n| target(n, &[])).collect();
        all.push(target("shop", &["target-7", "target-150"]));
        all.push(target("admin", &["target-150"]));
        let group = ["admin", "shop", "target-150", "target-7"];
        for index in 0..4 {
            let split = Shard { index, count: 4 }.split(all.clone());
            let kept: Vec<&str> = split
                .kept
                .iter()
                .map(|t| t.name.as_str())
                .filter(|n| group.contains(n))
                .collect();
            assert!(
                kept.is_empty() || kept.len() == group.len(),
                "shard {index}/4 keeps part of the group: {kept:?}"
            );
            if !kept.is_empty() {
                assert_eq!(
                    Shard::owner_of(4, "admin"),
                    index,
                    "placed by its first name"
                );
            }
        }
    }

    #[test]
    fn shards_are_read_from_k_n_or_the_host_name() {
        let none = Host(None);
        assert_eq!(Shard::parse("2/5", &none), Ok(Shard { index: 2, count: 5 }));
        assert_eq!(Shard::parse(" 0/1 ", &none), Ok(Shard::default()));
        let pod = Host(Some("dbcanary-2.dbcanary.monitoring.svc"));
        assert_eq!(
            Shard::parse("ordinal/3", &pod),
            Ok(Shard { index: 2, count: 3 })
        );
        let refused: [(&str, Option<&'static str>, &str); 9] = [
            ("5/5", None, "k must be below n"),
            ("0/0", None, "at least 1"),
            ("1", None, "is not a shard"),
            ("-1/3", None, "is not a shard"),
            ("a/b", None, "is not a shard"),
            ("1/3/4", None, "is not a shard"),
            ("0/20000", None, "at most 10000"),
            ("ordinal/3", Some("dbcanary"), "does not end in -<digits>"),
            (
                "ordinal/3",
                Some("dbcanary-3"),
                "ordinal 3, which is not below n = 3",
            ),
        ];
        for (text, host, reason) in refused {
            let e = Shard::parse(text, &Host(host)).unwrap_err();
            assert!(e.contains(reason), "{text} on {host:?}: {e}");
        }
    }
}
