//! security end to end: the real agent loads the real BPF programs, the real
//! CLI drives them, and the events must be exactly the credential and
//! privilege calls the workload made, with their ids, capabilities and
//! results.

use coral_e2e::*;
use serde_json::Value;
use std::collections::HashMap;
use std::io::{BufRead, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

const NOBODY: u64 = 65534;
const CAP_NET_RAW: u64 = 13;

/// A fresh directory, mode 0755, with `mnt/` and `suid-true`: a copy of
/// true(1) owned by root, mode 04755.
fn scratch_dir(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "coral-sec-{tag}-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("mnt")).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let suid = dir.join("suid-true");
    let true_bin = ["/usr/bin/true", "/bin/true"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .expect("true(1)");
    std::fs::copy(true_bin, &suid).unwrap();
    // The test runs as root: the copy is root's.
    std::fs::set_permissions(&suid, std::fs::Permissions::from_mode(0o4755)).unwrap();
    dir
}

/// A `coral-workload --security DIR`, ready.
fn workload(dir: &Path) -> ReadyChild {
    ReadyChild::spawn(
        Command::new(bin("coral-workload")).args(["--security", dir.to_str().unwrap()]),
    )
}

/// Sends "go" and reads the workload's report lines ("name values...") up to "done".
fn go(w: &mut ReadyChild) -> HashMap<String, Vec<String>> {
    let stdin = w.stdin.as_mut().unwrap();
    stdin.write_all(b"go\n").unwrap();
    stdin.flush().unwrap();
    let mut out = HashMap::new();
    loop {
        let mut line = String::new();
        assert!(
            w.stdout.read_line(&mut line).unwrap() > 0,
            "workload ended early"
        );
        let line = line.trim();
        if line == "done" {
            return out;
        }
        let mut parts = line.split_whitespace().map(str::to_string);
        let name = parts.next().unwrap();
        out.insert(name, parts.collect());
    }
}

/// Lets it exec its setuid copy of true(1) and waits for that to exit.
fn exec_and_wait(w: &mut ReadyChild) {
    let mut stdin = w.stdin.take().unwrap();
    stdin.write_all(b"exec\n").unwrap();
    drop(stdin);
    let status = w.child.wait().unwrap();
    assert!(status.success(), "suid-true: {status}");
}

fn n(v: &Value) -> u64 {
    u64_of(v)
}

/// A proto3-JSON int64 (a string), number, or absent (0).
fn i64_of(v: &Value) -> i64 {
    match v {
        Value::String(s) => s.parse().unwrap(),
        Value::Number(n) => n.as_i64().unwrap(),
        Value::Null => 0,
        other => panic!("not an i64: {other}"),
    }
}

fn hex(s: &str) -> u64 {
    u64::from_str_radix(s.trim_start_matches("0x"), 16).unwrap()
}

/// The final SecurityStats and every SecurityEvent before it.
fn results(agent: &Agent, id: &str) -> (Value, Vec<Value>) {
    let records = agent.records(id);
    let last = records.last().expect("no records");
    assert_eq!(last["final"], true, "last record is not final: {last}");
    let events = records
        .iter()
        .filter_map(|r| r.get("securityEvent").cloned())
        .collect();
    (last["securityStats"].clone(), events)
}

fn only<'a>(events: &'a [Value], ty: &str, syscall: &str) -> &'a Value {
    let found: Vec<_> = events
        .iter()
        .filter(|e| e["type"] == format!("SECURITY_EVENT_TYPE_{ty}") && e["syscall"] == syscall)
        .collect();
    assert_eq!(found.len(), 1, "{ty} {syscall}: {found:?}");
    found[0]
}

#[test]
#[ignore = "needs root and BPF"]
fn reports_exactly_the_privilege_calls_of_the_target() {
    require_kernel();
    let agent = Agent::start(&[]);
    let dir = scratch_dir("target");
    let other_dir = scratch_dir("other");
    let mut target = workload(&dir);
    let mut other = workload(&other_dir);
    let info = agent.start_collector(&[
        "--kind",
        "security",
        "--pid",
        &target.pid.to_string(),
        "--duration",
        "60s",
    ]);
    let id = id_of(&info);
    assert_eq!(info["state"], "COLLECTOR_STATE_RUNNING", "{info}");
    let programs = prog_ids_of(&info);
    assert_eq!(programs.len(), 3, "{info}");

    let said = go(&mut target);
    // The other process makes the same calls (setuid family, capset, exec
    // of a setuid file, ...): the pid filter keeps all of them out.
    go(&mut other);
    exec_and_wait(&mut other);
    exec_and_wait(&mut target);

    let stopped = agent.coral_json(&["tap", "stop", &id]).remove(0);
    assert_eq!(stopped["state"], "COLLECTOR_STATE_STOPPED", "{stopped}");
    let (stats, events) = results(&agent, &id);

    // Exactly these, all of the target, child of this test.
    let mut per_type: HashMap<String, u64> = HashMap::new();
    for e in &events {
        *per_type
            .entry(e["type"].as_str().unwrap().to_string())
            .or_default() += 1;
        assert_eq!(n(&e["pid"]), u64::from(target.pid), "{e}");
        assert_eq!(n(&e["ppid"]), u64::from(std::process::id()), "{e}");
        assert!(e["newCredentials"].is_object(), "{e}");
    }
    let expected: HashMap<String, u64> = [
        ("BPF_PROG_LOAD", 1),
        ("CAPSET", 1),
        ("PTRACE", 1),
        ("MODULE_LOAD", 1),
        ("CREDENTIALS", 3),
        ("MOUNT", 1),
        ("SYSCALL", 1),
        ("PRIVILEGED_EXEC", 1),
    ]
    .into_iter()
    .map(|(t, c)| (format!("SECURITY_EVENT_TYPE_{t}"), c))
    .collect();
    assert_eq!(per_type, expected, "{events:#?}");

    // bpf(BPF_PROG_LOAD): the program's type, name, size and its fd.
    let bpf = only(&events, "BPF_PROG_LOAD", "bpf");
    assert_eq!(bpf["bpfProgType"], "socket_filter", "{bpf}");
    assert_eq!(bpf["name"], "coral_wl", "{bpf}");
    assert_eq!(n(&bpf["bpfInsnCount"]), 2, "{bpf}");
    assert_eq!(
        i64_of(&bpf["result"]),
        said["bpf"][0].parse::<i64>().unwrap(),
        "{bpf}"
    );

    // capset: CAP_NET_RAW out of effective and permitted, nothing else.
    let capset = only(&events, "CAPSET", "capset");
    let c = &said["capset"];
    let (old_eff, new_eff, old_perm, new_perm) = (hex(&c[0]), hex(&c[1]), hex(&c[2]), hex(&c[3]));
    assert_eq!(old_eff & !new_eff, 1 << CAP_NET_RAW, "{c:?}");
    assert_eq!(
        n(&capset["oldCredentials"]["capEffective"]),
        old_eff,
        "{capset}"
    );
    assert_eq!(
        n(&capset["newCredentials"]["capEffective"]),
        new_eff,
        "{capset}"
    );
    assert_eq!(
        n(&capset["oldCredentials"]["capPermitted"]),
        old_perm,
        "{capset}"
    );
    assert_eq!(
        n(&capset["newCredentials"]["capPermitted"]),
        new_perm,
        "{capset}"
    );
    assert_eq!(
        capset["capsLost"],
        serde_json::json!(["CAP_NET_RAW"]),
        "{capset}"
    );
    assert!(capset["capsGained"].is_null(), "{capset}");
    assert_eq!(i64_of(&capset["result"]), 0);

    // ptrace: the attach to its child.
    let ptrace = only(&events, "PTRACE", "ptrace");
    assert_eq!(ptrace["request"], "PTRACE_ATTACH", "{ptrace}");
    assert_eq!(
        n(&ptrace["targetPid"]),
        said["ptrace"][0].parse::<u64>().unwrap(),
        "{ptrace}"
    );
    assert_eq!(i64_of(&ptrace["result"]), 0, "{ptrace}");

    // finit_module(-1): failed (ENOSYS without CONFIG_MODULES, else
    // EBADF or EPERM), with the errno the workload saw; the kernel's
    // result is -errno (libc's -1 and errno).
    let module = only(&events, "MODULE_LOAD", "finit_module");
    let m = &said["finit_module"];
    assert_eq!(m[0], "-1", "{m:?}");
    let errno: i64 = m[1].parse().unwrap();
    assert!(errno > 0, "{m:?}");
    assert_eq!(i64_of(&module["result"]), -errno, "{module}");
    assert_eq!(n(&module["errno"]) as i64, errno, "{module}");

    // The setuid family: ids before and after, and the refused setuid(0).
    let gid = only(&events, "CREDENTIALS", "setresgid");
    for f in ["gid", "egid", "sgid", "fsgid"] {
        assert_eq!(n(&gid["oldCredentials"][f]), 0, "{gid}");
        assert_eq!(n(&gid["newCredentials"][f]), NOBODY, "{gid}");
    }
    assert_eq!(n(&gid["newCredentials"]["uid"]), 0, "{gid}");
    let uid = only(&events, "CREDENTIALS", "setresuid");
    for f in ["uid", "euid", "suid", "fsuid"] {
        assert_eq!(n(&uid["oldCredentials"][f]), 0, "{uid}");
        assert_eq!(n(&uid["newCredentials"][f]), NOBODY, "{uid}");
    }
    // Leaving uid 0 clears the capabilities.
    assert_eq!(n(&uid["oldCredentials"]["capEffective"]), new_eff, "{uid}");
    assert_eq!(n(&uid["newCredentials"]["capEffective"]), 0, "{uid}");
    assert_eq!(i64_of(&uid["result"]), 0, "{uid}");
    let setuid = only(&events, "CREDENTIALS", "setuid");
    assert_eq!(
        (i64_of(&setuid["result"]), setuid["error"].as_str()),
        (-1, Some("EPERM"))
    );
    assert_eq!(n(&setuid["oldCredentials"]["uid"]), NOBODY, "{setuid}");
    assert_eq!(n(&setuid["newCredentials"]["euid"]), NOBODY, "{setuid}");

    // mount as nobody: EPERM, with what it asked for.
    let mount = only(&events, "MOUNT", "mount");
    assert_eq!(mount["error"], "EPERM", "{mount}");
    assert_eq!(mount["path"], dir.join("mnt").to_str().unwrap(), "{mount}");
    assert_eq!(
        (mount["source"].as_str(), mount["fsType"].as_str()),
        (Some("none"), Some("tmpfs"))
    );
    assert_eq!(n(&mount["newCredentials"]["uid"]), NOBODY, "{mount}");

    // chroot, from the default set of reported syscalls.
    let chroot = only(&events, "SYSCALL", "chroot");
    assert_eq!(chroot["error"], "EPERM", "{chroot}");

    // The setuid-root exec by nobody: euid 65534 -> 0, capabilities gained.
    let exec = only(&events, "PRIVILEGED_EXEC", "execve");
    assert_eq!(
        exec["path"],
        dir.join("suid-true").to_str().unwrap(),
        "{exec}"
    );
    assert_eq!(exec["setuid"], true, "{exec}");
    assert!(exec["setgid"].is_null(), "{exec}");
    assert_eq!(n(&exec["fileMode"]), 0o4755, "{exec}");
    assert_eq!(n(&exec["oldCredentials"]["euid"]), NOBODY, "{exec}");
    assert_eq!(n(&exec["newCredentials"]["euid"]), 0, "{exec}");
    assert_eq!(n(&exec["newCredentials"]["uid"]), NOBODY, "{exec}");
    assert_eq!(n(&exec["oldCredentials"]["capEffective"]), 0, "{exec}");
    assert!(n(&exec["newCredentials"]["capEffective"]) > 0, "{exec}");
    assert!(!exec["capsGained"].as_array().unwrap().is_empty(), "{exec}");
    assert_eq!(exec["comm"], "suid-true", "{exec}");

    // The aggregate counts the same.
    let total: u64 = stats["types"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| n(&t["events"]))
        .sum();
    let failed: u64 = stats["types"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| n(&t["failed"]))
        .sum();
    assert_eq!((total, failed), (10, 4), "{stats}");
    let procs = stats["processes"].as_array().unwrap();
    assert_eq!(procs.len(), 1, "{stats}");
    assert_eq!(n(&procs[0]["pid"]), u64::from(target.pid), "{stats}");

    wait_programs_gone(&programs, Duration::from_secs(10));

    // The human view: event lines and the final tables.
    let out = agent.coral(&["tap", "events", &id]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    for want in [
        "priv-exec",
        "uid 0->65534",
        "-CAP_NET_RAW",
        "by type:",
        "by syscall:",
        "EPERM",
    ] {
        assert!(text.contains(want), "no {want:?} in\n{text}");
    }

    let _ = std::fs::remove_dir_all(&dir);
    let _ = std::fs::remove_dir_all(&other_dir);
}

/// With no filter, other processes' bpf() loads are events but the agent's
/// own (a second collector it starts) are not.
#[test]
#[ignore = "needs root and BPF"]
fn the_agents_own_bpf_loads_are_not_events() {
    require_kernel();
    let agent = Agent::start(&[]);
    let dir = scratch_dir("agent");
    let info = agent.start_collector(&["--kind", "security", "--syscalls", "none"]);
    let id = id_of(&info);
    let second = agent.start_collector(&["--kind", "syscall-stats", "--pid", "1"]);
    assert!(!prog_ids_of(&second).is_empty(), "{second}");
    let mut w = workload(&dir);
    go(&mut w);
    exec_and_wait(&mut w);
    agent.coral_json(&["tap", "stop", &id_of(&second)]);
    agent.coral_json(&["tap", "stop", &id]);
    let (_, events) = results(&agent, &id);
    let loads: Vec<_> = events
        .iter()
        .filter(|e| e["type"] == "SECURITY_EVENT_TYPE_BPF_PROG_LOAD")
        .collect();
    assert!(
        loads
            .iter()
            .any(|e| n(&e["pid"]) == u64::from(w.pid) && e["name"] == "coral_wl"),
        "the workload's load is missing: {loads:?}"
    );
    assert!(
        loads.iter().all(|e| n(&e["pid"]) != u64::from(agent.pid())),
        "{loads:?}"
    );
    // "none": no SYSCALL events, though the workload called chroot.
    assert!(
        events
            .iter()
            .all(|e| e["type"] != "SECURITY_EVENT_TYPE_SYSCALL"),
        "{events:?}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// By --container: the workload inside is reported with its container (id,
/// runtime, cgroup path), the same workload outside is not.
#[test]
#[ignore = "needs root and BPF"]
fn events_name_the_container_and_a_container_filter_keeps_to_it() {
    require_kernel();
    let scope = DockerScope::create();
    let agent = Agent::start(&[]);
    let (dir, other_dir) = (scratch_dir("inside"), scratch_dir("outside"));
    let mut inside = workload(&dir);
    scope.add(inside.pid);
    let mut outside = workload(&other_dir);
    let info = agent.start_collector(&["--kind", "security", "--container", &scope.id[..12]]);
    let id = id_of(&info);
    go(&mut inside);
    go(&mut outside);
    exec_and_wait(&mut outside);
    exec_and_wait(&mut inside);
    agent.coral_json(&["tap", "stop", &id]);
    let (stats, events) = results(&agent, &id);
    assert_eq!(events.len(), 10, "{events:#?}");
    for e in &events {
        assert_eq!(n(&e["pid"]), u64::from(inside.pid), "{e}");
        assert_eq!(e["container"]["containerId"], scope.id.as_str(), "{e}");
        assert_eq!(e["container"]["runtime"], "docker", "{e}");
        assert_eq!(
            e["container"]["cgroupPath"],
            scope.relative().as_str(),
            "{e}"
        );
    }
    let procs = stats["processes"].as_array().unwrap();
    assert_eq!(
        procs[0]["container"]["containerId"],
        scope.id.as_str(),
        "{stats}"
    );
    let _ = std::fs::remove_dir_all(&dir);
    let _ = std::fs::remove_dir_all(&other_dir);
}

/// A file-capability binary (no setuid bit) exec'd by nobody: the exec is
/// reported, with the capability it gained and setuid false.
#[test]
#[ignore = "needs root and BPF"]
fn an_exec_of_a_file_capability_binary_is_reported() {
    require_kernel();
    let agent = Agent::start(&[]);
    let dir = scratch_dir("fcap");
    let fcap = dir.join("fcap-true");
    std::fs::copy(dir.join("suid-true"), &fcap).unwrap();
    std::fs::set_permissions(&fcap, std::fs::Permissions::from_mode(0o755)).unwrap();
    let set = Command::new("setcap")
        .args(["cap_net_raw+ep", fcap.to_str().unwrap()])
        .status()
        .expect("setcap (libcap2-bin)");
    assert!(set.success(), "setcap: {set}");
    // The workload's sequence leaves it nobody with no capabilities, then
    // it execs the file.
    let mut w = ReadyChild::spawn(Command::new(bin("coral-workload")).args([
        "--security",
        dir.to_str().unwrap(),
        "--exec",
        "fcap-true",
    ]));
    let info = agent.start_collector(&["--kind", "security", "--pid", &w.pid.to_string()]);
    let id = id_of(&info);
    go(&mut w);
    exec_and_wait(&mut w);
    agent.coral_json(&["tap", "stop", &id]);
    let (_, events) = results(&agent, &id);
    let execs: Vec<_> = events
        .iter()
        .filter(|e| e["type"] == "SECURITY_EVENT_TYPE_PRIVILEGED_EXEC")
        .collect();
    assert_eq!(execs.len(), 1, "{events:#?}");
    let e = execs[0];
    assert_eq!(e["path"], fcap.to_str().unwrap(), "{e}");
    assert_eq!(e["fileCaps"], true, "{e}");
    assert!(e["setuid"].is_null(), "{e}");
    assert_eq!(n(&e["newCredentials"]["euid"]), NOBODY, "{e}");
    assert_eq!(n(&e["oldCredentials"]["capPermitted"]), 0, "{e}");
    assert_eq!(e["capsGained"], serde_json::json!(["CAP_NET_RAW"]), "{e}");
    assert_eq!(
        n(&e["newCredentials"]["capPermitted"]),
        1 << CAP_NET_RAW,
        "{e}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
