//! The deployment files in deploy/ against the binaries they run: every
//! flag they pass exists (in the binary's `--help`), the ports line up
//! (container port = --listen port = Service target; the agents' --colony
//! port = the colony Service's), and the agent gets exactly the
//! capabilities docs/security.md ("Privileges per kind") says every kind
//! needs, and nothing more; the colony gets none.

use coral_e2e::bin;
use serde_yaml::Value;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn help(binary: &str) -> String {
    let out = Command::new(bin(binary)).arg("--help").output().unwrap();
    assert!(out.status.success());
    String::from_utf8(out.stdout).unwrap()
}

/// Every `--flag` of `args` is in `help`.
fn check_flags(what: &str, args: &[String], help: &str) {
    for a in args.iter().filter(|a| a.starts_with("--")) {
        let flag = a.split('=').next().unwrap();
        assert!(
            help.contains(&format!("{flag} ")) || help.contains(&format!("{flag}\n")),
            "{what}: {flag} is not a flag of the binary:\n{help}"
        );
    }
}

/// The value of `--name=V` or `--name V` in `args`.
fn flag(args: &[String], name: &str) -> Option<String> {
    let long = format!("--{name}");
    args.iter().enumerate().find_map(|(i, a)| {
        a.strip_prefix(&format!("{long}="))
            .map(str::to_string)
            .or_else(|| (a == &long).then(|| args.get(i + 1).cloned()).flatten())
    })
}

fn port_of(addr: &str) -> u16 {
    addr.rsplit(':').next().unwrap().parse().unwrap()
}

/// The capabilities every kind needs: the first CAP_* names of each row of
/// the capabilities column (alternatives in parentheses left out).
fn required_capabilities() -> BTreeSet<String> {
    let doc = std::fs::read_to_string(root().join("docs/security.md")).unwrap();
    let table = doc
        .split("## Privileges per kind")
        .nth(1)
        .expect("docs/security.md has a Privileges per kind section");
    let mut caps = BTreeSet::new();
    for row in table.lines().filter(|l| l.starts_with("| ")).skip(1) {
        let cells: Vec<&str> = row.split('|').map(str::trim).collect();
        let column = cells.get(2).copied().unwrap_or("");
        let required = column.split('(').next().unwrap();
        for word in required.split(|c: char| !c.is_ascii_alphanumeric() && c != '_') {
            if let Some(cap) = word.strip_prefix("CAP_") {
                caps.insert(cap.to_string());
            }
        }
    }
    assert!(!caps.is_empty(), "no capability found in docs/security.md");
    caps
}

fn documents(file: &str) -> Vec<Value> {
    let text = std::fs::read_to_string(root().join("deploy/kubernetes").join(file)).unwrap();
    serde_yaml::Deserializer::from_str(&text)
        .map(|d| serde::Deserialize::deserialize(d).unwrap())
        .collect()
}

fn find<'a>(docs: &'a [Value], kind: &str) -> &'a Value {
    docs.iter()
        .find(|d| d["kind"] == kind)
        .unwrap_or_else(|| panic!("no {kind}"))
}

fn strings(v: &Value) -> Vec<String> {
    v.as_sequence()
        .map(|s| s.iter().map(|x| x.as_str().unwrap().to_string()).collect())
        .unwrap_or_default()
}

#[test]
fn kubernetes_manifests_match_the_binaries() {
    let required = required_capabilities();
    assert_eq!(
        required,
        ["BPF", "PERFMON"].map(String::from).into(),
        "docs/security.md"
    );
    let agent_help = help("coral-agent");
    let colony_help = help("coral-colony");

    let agent_docs = documents("agent-daemonset.yaml");
    let ds = find(&agent_docs, "DaemonSet");
    let pod = &ds["spec"]["template"]["spec"];
    assert_eq!(
        pod["hostPID"], true,
        "pid filters name the node's processes"
    );
    let c = &pod["containers"][0];
    let args = strings(&c["args"]);
    check_flags("agent DaemonSet", &args, &agent_help);
    let sc = &c["securityContext"];
    assert_eq!(sc["privileged"], false);
    let added: BTreeSet<String> = strings(&sc["capabilities"]["add"]).into_iter().collect();
    assert_eq!(
        added, required,
        "the agent gets what the kinds need, no more"
    );
    assert_eq!(strings(&sc["capabilities"]["drop"]), ["ALL"]);
    let listen = flag(&args, "listen").unwrap();
    let port = &c["ports"][0];
    assert_eq!(
        port["containerPort"].as_u64(),
        Some(port_of(&listen) as u64)
    );
    let advertise = flag(&args, "advertise").unwrap();
    assert_eq!(port_of(&advertise), port_of(&listen));
    assert!(
        advertise.starts_with("https://"),
        "TLS: --tls-cert is given"
    );
    assert!(flag(&args, "tls-cert").is_some() && flag(&args, "token-file").is_some());

    let colony_docs = documents("colony.yaml");
    let dep = find(&colony_docs, "Deployment");
    let svc = find(&colony_docs, "Service");
    let c = &dep["spec"]["template"]["spec"]["containers"][0];
    let cargs = strings(&c["args"]);
    check_flags("colony Deployment", &cargs, &colony_help);
    let listen = flag(&cargs, "listen").unwrap();
    let cport = &c["ports"][0];
    assert_eq!(
        cport["containerPort"].as_u64(),
        Some(port_of(&listen) as u64)
    );
    let sport = &svc["spec"]["ports"][0];
    assert_eq!(
        sport["targetPort"], cport["name"],
        "the Service targets the gRPC port"
    );
    assert_eq!(
        svc["spec"]["selector"], dep["spec"]["template"]["metadata"]["labels"],
        "the Service selects the colony's pods"
    );
    let sc = &c["securityContext"];
    assert_eq!(strings(&sc["capabilities"]["drop"]), ["ALL"]);
    assert!(
        sc["capabilities"]["add"].is_null(),
        "the colony needs no capability"
    );
    // The agents dial the colony's Service, on its port.
    let colony_url = flag(&args, "colony").unwrap();
    let name = svc["metadata"]["name"].as_str().unwrap();
    let namespace = svc["metadata"]["namespace"].as_str().unwrap();
    assert!(
        colony_url.starts_with(&format!("https://{name}.{namespace}.svc:")),
        "{colony_url}"
    );
    assert_eq!(Some(port_of(&colony_url) as u64), sport["port"].as_u64());
    // Mounted files are what the flags name.
    for (docs, args) in [(&agent_docs, &args), (&colony_docs, &cargs)] {
        let kind = if docs == &agent_docs {
            "DaemonSet"
        } else {
            "Deployment"
        };
        let c = &find(docs, kind)["spec"]["template"]["spec"]["containers"][0];
        let mounts: Vec<String> = c["volumeMounts"]
            .as_sequence()
            .unwrap()
            .iter()
            .map(|m| m["mountPath"].as_str().unwrap().to_string())
            .collect();
        for a in args.iter() {
            if let Some((_, path)) = a.split_once('=')
                && path.starts_with("/etc/coral/")
            {
                assert!(
                    mounts.iter().any(|m| path.starts_with(m.as_str())),
                    "{kind}: {path} is on no mounted volume"
                );
            }
        }
    }

    let pg = documents("postgres.yaml");
    let pg_svc = find(&pg, "Service");
    assert_eq!(pg_svc["spec"]["ports"][0]["port"].as_u64(), Some(5432));
    for d in pg.iter().chain(&colony_docs).chain(&agent_docs) {
        assert_eq!(d["metadata"]["namespace"], "coral", "{d:?}");
    }
}

/// `Key=Value` lines of a unit's [Service] section (continuations joined).
fn unit(file: &str) -> Vec<(String, String)> {
    let text = std::fs::read_to_string(root().join("deploy/systemd").join(file)).unwrap();
    let joined = text.replace("\\\n", " ");
    joined
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect()
}

fn get<'a>(unit: &'a [(String, String)], key: &str) -> &'a str {
    unit.iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
        .unwrap_or_else(|| panic!("no {key}"))
}

fn exec_args(unit: &[(String, String)], binary: &str) -> Vec<String> {
    let exec = get(unit, "ExecStart");
    let mut words = exec.split_whitespace();
    assert_eq!(words.next(), Some(format!("/usr/bin/{binary}").as_str()));
    words.map(str::to_string).collect()
}

#[test]
fn systemd_units_match_the_binaries() {
    let required: BTreeSet<String> = required_capabilities()
        .into_iter()
        .map(|c| format!("CAP_{c}"))
        .collect();
    let agent = unit("coral-agent.service");
    let args = exec_args(&agent, "coral-agent");
    check_flags("coral-agent.service", &args, &help("coral-agent"));
    for key in ["AmbientCapabilities", "CapabilityBoundingSet"] {
        let caps: BTreeSet<String> = get(&agent, key)
            .split_whitespace()
            .map(str::to_string)
            .collect();
        assert_eq!(caps, required, "coral-agent.service {key}");
    }
    assert_ne!(get(&agent, "User"), "root");
    let listen = flag(&args, "listen").unwrap();
    assert_eq!(
        port_of(&flag(&args, "advertise").unwrap()),
        port_of(&listen)
    );

    let colony = unit("coral-colony.service");
    let cargs = exec_args(&colony, "coral-colony");
    check_flags("coral-colony.service", &cargs, &help("coral-colony"));
    assert_eq!(get(&colony, "CapabilityBoundingSet"), "");
    assert_eq!(get(&colony, "AmbientCapabilities"), "");
    assert_eq!(
        port_of(&flag(&args, "colony").unwrap()),
        port_of(&flag(&cargs, "listen").unwrap()),
        "the agent dials the colony's port"
    );
    assert!(
        flag(&cargs, "store").is_none(),
        "the environment file may choose the store"
    );
}
