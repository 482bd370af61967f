//! cpu-profile as pprof: a gzipped `perftools.profiles.Profile` message, what
//! `go tool pprof`, Pyroscope, Parca, Grafana and speedscope read.
//!
//! The messages are declared here with prost derives (field numbers from the
//! pprof format), only the parts a CPU profile needs.

use coral_proto::v1::{CpuProfile, Frame};
use flate2::Compression;
use flate2::write::GzEncoder;
use prost::Message;
use std::collections::HashMap;
use std::io::Write;

#[derive(Clone, PartialEq, prost::Message)]
pub struct Profile {
    #[prost(message, repeated, tag = "1")]
    pub sample_type: Vec<ValueType>,
    #[prost(message, repeated, tag = "2")]
    pub sample: Vec<Sample>,
    #[prost(message, repeated, tag = "3")]
    pub mapping: Vec<Mapping>,
    #[prost(message, repeated, tag = "4")]
    pub location: Vec<Location>,
    #[prost(message, repeated, tag = "5")]
    pub function: Vec<Function>,
    /// `string_table[0]` must be "".
    #[prost(string, repeated, tag = "6")]
    pub string_table: Vec<String>,
    #[prost(int64, tag = "9")]
    pub time_nanos: i64,
    #[prost(int64, tag = "10")]
    pub duration_nanos: i64,
    #[prost(message, optional, tag = "11")]
    pub period_type: Option<ValueType>,
    #[prost(int64, tag = "12")]
    pub period: i64,
    #[prost(int64, repeated, tag = "13")]
    pub comment: Vec<i64>,
    #[prost(int64, tag = "14")]
    pub default_sample_type: i64,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct ValueType {
    #[prost(int64, tag = "1")]
    pub r#type: i64,
    #[prost(int64, tag = "2")]
    pub unit: i64,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Sample {
    /// Leaf first.
    #[prost(uint64, repeated, tag = "1")]
    pub location_id: Vec<u64>,
    #[prost(int64, repeated, tag = "2")]
    pub value: Vec<i64>,
    #[prost(message, repeated, tag = "3")]
    pub label: Vec<Label>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Label {
    #[prost(int64, tag = "1")]
    pub key: i64,
    #[prost(int64, tag = "2")]
    pub str: i64,
    #[prost(int64, tag = "3")]
    pub num: i64,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Mapping {
    #[prost(uint64, tag = "1")]
    pub id: u64,
    #[prost(uint64, tag = "2")]
    pub memory_start: u64,
    #[prost(uint64, tag = "3")]
    pub memory_limit: u64,
    #[prost(uint64, tag = "4")]
    pub file_offset: u64,
    #[prost(int64, tag = "5")]
    pub filename: i64,
    #[prost(bool, tag = "7")]
    pub has_functions: bool,
    #[prost(bool, tag = "10")]
    pub has_inline_frames: bool,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Location {
    #[prost(uint64, tag = "1")]
    pub id: u64,
    #[prost(uint64, tag = "2")]
    pub mapping_id: u64,
    #[prost(uint64, tag = "3")]
    pub address: u64,
    /// Innermost first: `line[0]` was inlined into `line[1]`, and so on.
    #[prost(message, repeated, tag = "4")]
    pub line: Vec<Line>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Line {
    #[prost(uint64, tag = "1")]
    pub function_id: u64,
    #[prost(int64, tag = "2")]
    pub line: i64,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Function {
    #[prost(uint64, tag = "1")]
    pub id: u64,
    #[prost(int64, tag = "2")]
    pub name: i64,
    #[prost(int64, tag = "3")]
    pub system_name: i64,
}

/// Interns strings, functions, mappings and locations as pprof wants them:
/// tables referenced by index or id.
#[derive(Default)]
struct Builder {
    profile: Profile,
    strings: HashMap<String, i64>,
    functions: HashMap<String, u64>,
    mappings: HashMap<String, u64>,
    locations: HashMap<(u64, String, Vec<String>), u64>,
}

impl Builder {
    fn string(&mut self, s: &str) -> i64 {
        if let Some(&i) = self.strings.get(s) {
            return i;
        }
        let i = self.profile.string_table.len() as i64;
        self.profile.string_table.push(s.to_string());
        self.strings.insert(s.to_string(), i);
        i
    }

    fn value_type(&mut self, ty: &str, unit: &str) -> ValueType {
        ValueType {
            r#type: self.string(ty),
            unit: self.string(unit),
        }
    }

    fn function(&mut self, name: &str) -> u64 {
        if let Some(&id) = self.functions.get(name) {
            return id;
        }
        let id = self.profile.function.len() as u64 + 1;
        let name_idx = self.string(name);
        self.profile.function.push(Function {
            id,
            name: name_idx,
            system_name: name_idx,
        });
        self.functions.insert(name.to_string(), id);
        id
    }

    fn mapping(&mut self, module: &str, address: u64) -> u64 {
        if let Some(&id) = self.mappings.get(module) {
            // Widen the range to every address seen in it.
            let m = &mut self.profile.mapping[id as usize - 1];
            m.memory_start = m.memory_start.min(address);
            m.memory_limit = m.memory_limit.max(address.saturating_add(1));
            return id;
        }
        let id = self.profile.mapping.len() as u64 + 1;
        let filename = self.string(module);
        self.profile.mapping.push(Mapping {
            id,
            memory_start: address,
            memory_limit: address.saturating_add(1),
            file_offset: 0,
            filename,
            has_functions: true,
            has_inline_frames: true,
        });
        self.mappings.insert(module.to_string(), id);
        id
    }

    /// One location for one address: its frames (outermost first, the
    /// rest inlined into it) become its lines, innermost first.
    fn location(&mut self, frames: &[&Frame]) -> u64 {
        let first = frames[0];
        let names: Vec<String> = frames.iter().map(|f| super::frame_name(f)).collect();
        let key = (first.address, first.module.clone(), names);
        if let Some(&id) = self.locations.get(&key) {
            return id;
        }
        let mapping_id = self.mapping(&first.module, first.address);
        let line = key
            .2
            .iter()
            .rev()
            .map(|n| Line {
                function_id: self.function(n),
                line: 0,
            })
            .collect();
        let id = self.profile.location.len() as u64 + 1;
        self.profile.location.push(Location {
            id,
            mapping_id,
            address: first.address,
            line,
        });
        self.locations.insert(key, id);
        id
    }
}

/// The profile as an uncompressed pprof message. `time_unix_nano`: when the
/// record was taken.
pub fn profile(p: &CpuProfile, time_unix_nano: u64) -> Profile {
    let mut b = Builder::default();
    b.string("");
    let period = if p.frequency_hz == 0 {
        0
    } else {
        1_000_000_000 / i64::from(p.frequency_hz)
    };
    b.profile.sample_type = vec![
        b.value_type("samples", "count"),
        b.value_type("cpu", "nanoseconds"),
    ];
    b.profile.period_type = Some(b.value_type("cpu", "nanoseconds"));
    b.profile.period = period;
    b.profile.duration_nanos = p.elapsed_ns as i64;
    b.profile.time_nanos = time_unix_nano.saturating_sub(p.elapsed_ns) as i64;
    b.profile.default_sample_type = b.string("cpu");
    let comments = [
        format!("coral cpu-profile at {} Hz", p.frequency_hz),
        format!("lost samples: {}", p.lost_samples),
    ];
    b.profile.comment = comments.iter().map(|c| b.string(c)).collect();
    let (pid_key, comm_key) = (b.string("pid"), b.string("comm"));

    for s in &p.stacks {
        // Group each frame with those inlined into it: one location each.
        let mut groups: Vec<Vec<&Frame>> = Vec::new();
        for f in &s.frames {
            match groups.last_mut() {
                Some(g) if f.inlined => g.push(f),
                _ => groups.push(vec![f]),
            }
        }
        let mut location_id: Vec<u64> = groups.iter().map(|g| b.location(g)).collect();
        location_id.reverse();
        let comm = b.string(&s.comm);
        b.profile.sample.push(Sample {
            location_id,
            value: vec![s.count as i64, s.count as i64 * period],
            label: vec![
                Label {
                    key: pid_key,
                    str: 0,
                    num: i64::from(s.pid),
                },
                Label {
                    key: comm_key,
                    str: comm,
                    num: 0,
                },
            ],
        });
    }
    b.profile
}

/// The profile as pprof wants it on disk: gzipped.
pub fn encode(p: &CpuProfile, time_unix_nano: u64) -> std::io::Result<Vec<u8>> {
    let mut gz = GzEncoder::new(Vec::new(), Compression::default());
    gz.write_all(&profile(p, time_unix_nano).encode_to_vec())?;
    gz.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use flate2::read::GzDecoder;
    use std::io::Read;

    #[test]
    fn decodes_with_the_same_totals() {
        let p = super::super::tests::profile();
        let bytes = encode(&p, 5_000_000_000).unwrap();
        let mut raw = Vec::new();
        GzDecoder::new(&bytes[..]).read_to_end(&mut raw).unwrap();
        let decoded = Profile::decode(&raw[..]).unwrap();
        assert_eq!(decoded.string_table[0], "");
        let samples: i64 = decoded.sample.iter().map(|s| s.value[0]).sum();
        assert_eq!(samples as u64, p.total_samples);
        assert_eq!(decoded.period, 20_000_000);
        assert_eq!(decoded.time_nanos, 3_000_000_000);
        // Leaf first: alpha's sample starts at alpha.
        let name = |loc: u64| {
            let l = &decoded.location[loc as usize - 1];
            let f = &decoded.function[l.line[0].function_id as usize - 1];
            decoded.string_table[f.name as usize].clone()
        };
        let alpha = decoded.sample.iter().find(|s| s.value[0] == 60).unwrap();
        assert_eq!(name(alpha.location_id[0]), "alpha");
        assert_eq!(name(*alpha.location_id.last().unwrap()), "main");
        // main is one location shared by every sample.
        assert_eq!(
            decoded
                .location
                .iter()
                .filter(
                    |l| decoded.function[l.line[0].function_id as usize - 1].name
                        == decoded
                            .string_table
                            .iter()
                            .position(|s| s == "main")
                            .unwrap() as i64
                )
                .count(),
            1
        );
    }

    #[test]
    fn inlined_frames_share_a_location() {
        let mut p = super::super::tests::profile();
        let mut inl = p.stacks[0].frames[1].clone();
        inl.function = "alpha_helper".into();
        inl.inlined = true;
        p.stacks[0].frames.push(inl);
        let decoded = profile(&p, 0);
        let sample = decoded.sample.iter().find(|s| s.value[0] == 60).unwrap();
        assert_eq!(sample.location_id.len(), 2);
        let leaf = &decoded.location[sample.location_id[0] as usize - 1];
        let names: Vec<_> = leaf
            .line
            .iter()
            .map(|l| {
                let f = &decoded.function[l.function_id as usize - 1];
                decoded.string_table[f.name as usize].as_str()
            })
            .collect();
        assert_eq!(names, ["alpha_helper", "alpha"]);
    }
}
