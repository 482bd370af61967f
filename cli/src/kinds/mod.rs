//! The collector kinds, each in its own module: its `tap start` / `tap run`
//! flags, how they become the kind's config, and how its records look to
//! people. This file lists them once; the `--kind` values, the flags of
//! every kind, the check that a flag belongs to the kind asked for, and the
//! dispatch from a record's payload to its renderer are derived from the
//! table below, and the matches over the proto enums have no `_` arm, so a
//! kind or payload added to the API does not build until it is handled here.
//!
//! A kind's module provides:
//! - `ABOUT`: one line for `--kind`'s help;
//! - `TAKES_INTERVAL`: whether the shared `--interval` flag applies;
//! - `Flags` (`clap::Args`): the kind's own flags, under its help heading;
//! - `config(&Flags, interval_ns)`: the `CollectorSpec.config` they make;
//! - [`Aggregate`] or [`Event`] for each of its payloads.

pub mod cpu_profile;
pub mod dns;
pub mod file_io;
pub mod http_latency;
pub mod memory;
pub mod process_events;
pub mod security;
pub mod syscall_stats;
pub mod tcp_metrics;

use clap::builder::PossibleValue;
use clap::parser::ValueSource;
use clap::{ArgMatches, ValueEnum};
use coral_proto::v1::{self as pb, collector_spec::Config, record::Payload};

/// How a cumulative aggregate (only the latest matters) looks to people.
pub trait Aggregate {
    /// One line for the live view of a pipe.
    fn summary(&self) -> String;
    /// The full report: tables and histograms.
    fn report(&self, opts: &ViewOptions) -> String;
}

/// How a discrete event (a request, a connection) looks to people.
pub trait Event {
    /// One line per event.
    fn line(&self) -> String;
    /// Column titles above the first line, where the kind has them.
    fn header(&self) -> Option<&'static str> {
        None
    }
    /// The event shown alone (`tap events` when it is the newest record).
    fn report(&self) -> String {
        format!("{}\n", self.line())
    }
}

/// What a payload is, for people.
pub enum View<'a> {
    Aggregate(&'a dyn Aggregate),
    Event(&'a dyn Event),
}

/// How records are shown to people.
#[derive(Clone, Copy, Debug)]
pub struct ViewOptions {
    /// Rows in tables.
    pub rows: usize,
    pub sort: http_latency::SortBy,
    /// process-events: the tree of the processes seen, at the end.
    pub tree: bool,
}

impl Default for ViewOptions {
    fn default() -> Self {
        Self {
            rows: crate::render::TABLE_ROWS,
            sort: Default::default(),
            tree: false,
        }
    }
}

macro_rules! kinds {
    ($($kind:ident => $module:ident),+ $(,)?) => {
        /// A `--kind` value.
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        pub enum Kind {
            $($kind,)+
        }

        impl Kind {
            pub const ALL: &'static [Kind] = &[$(Kind::$kind),+];

            /// One line on what the kind measures.
            pub fn about(self) -> &'static str {
                match self {
                    $(Kind::$kind => $module::ABOUT,)+
                }
            }

            fn takes_interval(self) -> bool {
                match self {
                    $(Kind::$kind => $module::TAKES_INTERVAL,)+
                }
            }

            /// The ids of the kind's own flags.
            fn flag_ids(self) -> Vec<String> {
                let cmd = match self {
                    $(Kind::$kind => <$module::Flags as clap::Args>::augment_args(clap::Command::new("flags")),)+
                };
                cmd.get_arguments().map(|a| a.get_id().to_string()).collect()
            }
        }

        impl From<Kind> for pb::CollectorKind {
            fn from(kind: Kind) -> Self {
                match kind {
                    $(Kind::$kind => pb::CollectorKind::$kind,)+
                }
            }
        }

        impl Kind {
            /// The kind of a `CollectorKind` value, if this CLI knows it.
            pub fn from_proto(kind: pb::CollectorKind) -> Option<Kind> {
                match kind {
                    pb::CollectorKind::Unspecified => None,
                    $(pb::CollectorKind::$kind => Some(Kind::$kind),)+
                }
            }
        }

        /// Every kind's own flags, each under its kind's help heading.
        #[derive(Debug, clap::Args)]
        pub struct KindFlags {
            $(
                #[command(flatten)]
                pub $module: $module::Flags,
            )+
        }

        impl KindFlags {
            /// The config of `kind` from its flags.
            pub fn config(&self, kind: Kind, interval_ns: u64) -> Config {
                match kind {
                    $(Kind::$kind => $module::config(&self.$module, interval_ns),)+
                }
            }
        }
    };
}

kinds! {
    SyscallStats => syscall_stats,
    HttpLatency => http_latency,
    CpuProfile => cpu_profile,
    TcpMetrics => tcp_metrics,
    ProcessEvents => process_events,
    Memory => memory,
    FileIo => file_io,
    Dns => dns,
    Security => security,
}

impl Kind {
    pub fn name(self) -> &'static str {
        pb::CollectorKind::from(self).name()
    }
}

impl ValueEnum for Kind {
    fn value_variants<'a>() -> &'a [Self] {
        Kind::ALL
    }

    fn to_possible_value(&self) -> Option<PossibleValue> {
        Some(PossibleValue::new(self.name()).help(self.about()))
    }
}

/// The name of a `CollectorKind` number from the wire.
pub fn kind_name(kind: i32) -> &'static str {
    match pb::CollectorKind::try_from(kind) {
        Ok(pb::CollectorKind::Unspecified) | Err(_) => "unknown",
        Ok(kind) => kind.name(),
    }
}

/// How `payload` looks to people.
pub fn view(payload: &Payload) -> View<'_> {
    match payload {
        Payload::SyscallStats(s) => View::Aggregate(s),
        Payload::HttpRequest(r) => View::Event(r),
        Payload::HttpStats(s) => View::Aggregate(s),
        Payload::CpuProfile(p) => View::Aggregate(p),
        Payload::TcpConnection(c) => View::Event(c),
        Payload::TcpStats(s) => View::Aggregate(s),
        Payload::ProcessEvent(e) => View::Event(e),
        Payload::ProcessStats(s) => View::Aggregate(s),
        Payload::MemoryStats(s) => View::Aggregate(s),
        Payload::OomKill(k) => View::Event(k),
        Payload::FileIoEvent(e) => View::Event(e),
        Payload::FileIoStats(s) => View::Aggregate(s),
        Payload::DnsQuery(q) => View::Event(q),
        Payload::DnsStats(s) => View::Aggregate(s),
        Payload::SecurityEvent(e) => View::Event(e),
        Payload::SecurityStats(s) => View::Aggregate(s),
    }
}

/// A container's short id (12 characters, as docker shows it), or `-`.
pub fn short_container(c: Option<&pb::Container>) -> &str {
    match c.map(|c| c.container_id.as_str()) {
        Some(id) if !id.is_empty() => &id[..id.len().min(12)],
        _ => "-",
    }
}

/// What kinds gather over a whole run of records, to show at its end.
#[derive(Default)]
pub struct Gathered {
    /// Every process seen (process-events), for `--tree`.
    process_tree: process_events::Tree,
}

impl Gathered {
    pub fn keep(&mut self, payload: &Payload) {
        if let Payload::ProcessEvent(e) = payload {
            self.process_tree.add(e);
        }
    }

    /// The end-of-run views `opts` asks for (empty when none).
    pub fn report(&self, opts: &ViewOptions) -> String {
        if opts.tree && !self.process_tree.is_empty() {
            format!("\nprocess tree:\n{}", self.process_tree.render())
        } else {
            String::new()
        }
    }
}

/// `-F/--frequency`, as people type it.
fn spelling(cmd: &clap::Command, id: &str) -> String {
    let Some(arg) = cmd.get_arguments().find(|a| a.get_id() == id) else {
        return id.to_string();
    };
    match (arg.get_short(), arg.get_long()) {
        (Some(s), Some(l)) => format!("-{s}/--{l}"),
        (None, Some(l)) => format!("--{l}"),
        (Some(s), None) => format!("-{s}"),
        (None, None) => id.to_string(),
    }
}

/// A usage error when `matches` has a flag of another kind than `kind`, or
/// `--interval` for a kind without one.
pub fn check_flags(kind: Kind, matches: &ArgMatches) -> Result<(), clap::Error> {
    let given = |id: &str| {
        matches!(
            matches
                .try_get_raw(id)
                .ok()
                .flatten()
                .map(|_| matches.value_source(id)),
            Some(Some(ValueSource::CommandLine | ValueSource::EnvVariable))
        )
    };
    let conflict = |msg: String| {
        Err(clap::Error::raw(
            clap::error::ErrorKind::ArgumentConflict,
            msg + "\n",
        ))
    };
    if given("interval") && !kind.takes_interval() {
        return conflict(format!("--interval does not apply to {}", kind.name()));
    }
    for &other in Kind::ALL.iter().filter(|&&k| k != kind) {
        for id in other.flag_ids() {
            if given(&id) {
                let flags = <KindFlags as clap::Args>::augment_args(clap::Command::new("flags"));
                // "an http-latency flag", "a cpu-profile flag".
                let article = if other.name().starts_with(['a', 'e', 'h', 'i', 'o', 'u']) {
                    "an"
                } else {
                    "a"
                };
                return conflict(format!(
                    "{} is {article} {} flag, and this collector is {} (--kind {})",
                    spelling(&flags, &id),
                    other.name(),
                    kind.name(),
                    kind.name()
                ));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_has_a_name_the_agent_knows_and_converts_back() {
        for &kind in Kind::ALL {
            let proto = pb::CollectorKind::from(kind);
            assert_eq!(Kind::from_proto(proto), Some(kind));
            assert_eq!(kind_name(proto as i32), kind.name());
            assert_eq!(pb::CollectorKind::from_name(kind.name()), Some(proto));
        }
        assert_eq!(kind_name(0), "unknown");
        assert_eq!(kind_name(9999), "unknown");
    }

    #[test]
    fn flag_ids_are_unique_across_kinds() {
        let mut seen = std::collections::HashSet::new();
        for &kind in Kind::ALL {
            for id in kind.flag_ids() {
                assert!(seen.insert(id.clone()), "{id} belongs to two kinds");
            }
        }
        assert!(!seen.is_empty());
    }
}
