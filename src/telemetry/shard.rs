//! The agent's own series about its place in a fleet of agents that split
//! one target list (`[agent] shard`): `dbcanary_agent_info{shard="k/n"}`
//! (1), and `dbcanary_agent_targets`, how many targets its shard kept, so
//! that `sum(dbcanary_agent_targets)` over a fleet is the whole list and
//! `count(dbcanary_agent_info)` the agents that report.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use super::catalogue::{AGENT_INFO, AGENT_TARGETS};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ShardLabels {
    shard: String,
}

/// The two series, registered once.
#[derive(Debug)]
pub struct AgentSeries {
    info: Family<ShardLabels, Gauge>,
    targets: Gauge,
}

impl AgentSeries {
    /// Registers both in `registry` (the `dbcanary_` one), as a lone agent
    /// (shard `0/1`) without targets until [`AgentSeries::set`].
    pub fn register(registry: &mut Registry) -> Self {
        let series = Self {
            info: Family::default(),
            targets: Gauge::default(),
        };
        series.set("0/1", 0);
        registry.register(AGENT_INFO.name, AGENT_INFO.help, series.info.clone());
        registry.register(
            AGENT_TARGETS.name,
            AGENT_TARGETS.help,
            series.targets.clone(),
        );
        series
    }

    /// This agent is shard `shard` and watches `targets` targets; a reload
    /// that changed the shard replaces the old series.
    pub fn set(&self, shard: &str, targets: usize) {
        let labels = ShardLabels {
            shard: shard.to_string(),
        };
        if self.info.get(&labels).is_none() {
            self.info.clear();
            self.info.get_or_create(&labels).set(1);
        }
        self.targets.set(i64::try_from(targets).unwrap_or(i64::MAX));
    }
}
