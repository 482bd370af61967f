//! What to collect and from whom: shared by `tap start` and `tap run`.

pub use crate::commands::parse_duration;
use crate::kinds::{self, Kind, KindFlags};
use clap::{ArgMatches, FromArgMatches};
use coral_proto::v1 as pb;
use std::time::Duration;

fn parse_label(s: &str) -> Result<(String, String), String> {
    let (k, v) = s
        .split_once('=')
        .ok_or_else(|| format!("{s:?} is not key=value"))?;
    if k.is_empty() {
        return Err(format!("{s:?} has an empty key"));
    }
    Ok((k.to_string(), v.to_string()))
}

/// What `tap start` and `tap run` take: the flags every kind shares, then
/// each kind's own (under its help heading). A flag of another kind than
/// `--kind` is a usage error, checked as the arguments are parsed.
#[derive(Debug)]
pub struct SpecArgs(Fields);

#[derive(Debug, clap::Args)]
pub struct Fields {
    /// Collector kind.
    #[arg(long, value_enum)]
    pub kind: Kind,

    /// How long it runs before it expires by itself (agent default: 60s).
    #[arg(long, short, value_parser = parse_duration)]
    pub duration: Option<Duration>,

    /// Only these processes (tgid). Repeat for several.
    #[arg(long = "pid", short = 'p')]
    pub pids: Vec<u32>,

    /// Only tasks in this cgroup v2 (and below): a path under the cgroup2 mount
    /// (memory also takes a cgroup v1 memory path, /sys/fs/cgroup/memory/...).
    #[arg(long)]
    pub cgroup: Option<String>,

    /// Only tasks with this exact name (comm, at most 15 bytes).
    #[arg(long)]
    pub comm: Option<String>,

    /// Only tasks of this container: its id or a unique prefix (docker,
    /// containerd, cri-o, podman), found by its cgroup; not with --cgroup.
    #[arg(long, conflicts_with = "cgroup")]
    pub container: Option<String>,

    /// Attach a label to every record, e.g. --label service=checkout. Repeatable.
    #[arg(long = "label", short = 'l', value_parser = parse_label)]
    pub labels: Vec<(String, String)>,

    /// Serve its results as metrics too: the agent's Prometheus /metrics
    /// (--metrics-listen) and OTLP push (--otlp-endpoint); not cpu-profile.
    #[arg(long)]
    pub export: bool,

    /// Aggregate snapshot interval (default 1s; not for cpu-profile).
    #[arg(long, value_parser = parse_duration)]
    pub interval: Option<Duration>,

    #[command(flatten)]
    pub flags: KindFlags,
}

impl clap::Args for SpecArgs {
    fn augment_args(cmd: clap::Command) -> clap::Command {
        Fields::augment_args(cmd)
    }

    fn augment_args_for_update(cmd: clap::Command) -> clap::Command {
        Fields::augment_args_for_update(cmd)
    }
}

impl FromArgMatches for SpecArgs {
    fn from_arg_matches(matches: &ArgMatches) -> Result<Self, clap::Error> {
        let fields = Fields::from_arg_matches(matches)?;
        kinds::check_flags(fields.kind, matches)?;
        Ok(SpecArgs(fields))
    }

    fn update_from_arg_matches(&mut self, matches: &ArgMatches) -> Result<(), clap::Error> {
        self.0.update_from_arg_matches(matches)?;
        kinds::check_flags(self.0.kind, matches)
    }
}

impl SpecArgs {
    pub fn kind(&self) -> Kind {
        self.0.kind
    }

    pub fn to_spec(&self) -> pb::CollectorSpec {
        let f = &self.0;
        let interval_ns = f.interval.map_or(0, |d| d.as_nanos() as u64);
        pb::CollectorSpec {
            kind: pb::CollectorKind::from(f.kind) as i32,
            duration_ns: f.duration.map(|d| d.as_nanos() as u64),
            filter: Some(pb::TargetFilter {
                pids: f.pids.clone(),
                cgroup: f.cgroup.clone().unwrap_or_default(),
                comm: f.comm.clone().unwrap_or_default(),
                container: f.container.clone().unwrap_or_default(),
            }),
            labels: f.labels.iter().cloned().collect(),
            export: f.export,
            config: Some(f.flags.config(f.kind, interval_ns)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_are_human() {
        assert_eq!(parse_duration("1m30s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert!(parse_duration("soon").is_err());
    }

    #[test]
    fn labels_need_a_key() {
        assert_eq!(parse_label("a=b=c"), Ok(("a".into(), "b=c".into())));
        assert!(parse_label("=x").is_err());
        assert!(parse_label("novalue").is_err());
    }
}
