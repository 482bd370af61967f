//! Container awareness without a container runtime: what a cgroup v2 path
//! says about the container and the Kubernetes pod a process runs in.
//!
//! Runtimes name the cgroups they create after the container, so the path
//! alone tells the container id, often the runtime, and under `kubepods` the
//! pod uid. No runtime socket or API server is asked, so this works the same
//! on a node with docker, containerd, cri-o or podman, with the systemd or the
//! cgroupfs cgroup driver:
//!
//! | runtime | systemd driver | cgroupfs driver |
//! |---|---|---|
//! | docker | `/system.slice/docker-<id>.scope` | `/docker/<id>` |
//! | containerd (Kubernetes) | `…/kubepods-<qos>-pod<uid_>.slice/cri-containerd-<id>.scope` | `/kubepods/<qos>/pod<uid>/<id>` (runtime not named: `cri`) |
//! | cri-o | `…/kubepods-<qos>-pod<uid_>.slice/crio-<id>.scope` | `/kubepods/<qos>/pod<uid>/crio-<id>` |
//! | podman | `/machine.slice/libpod-<id>.scope` (rootless: under `user@<uid>.service`) | `/libpod_parent/libpod-<id>` |
//!
//! The systemd driver writes the pod uid with underscores (`-` separates
//! slice levels), the cgroupfs driver with dashes; both come out with dashes.
//! When containers nest (a kind node is a docker container running
//! Kubernetes), the innermost one is the process's container. conmon
//! (`crio-conmon-<id>.scope`, `libpod-conmon-<id>.scope`) is the runtime's
//! monitor, not the container: it gets no id.
//!
//! [`resolve`] turns the cgroup ids BPF programs see into these paths.

#[cfg(unix)]
pub mod resolve;

use std::fmt;

/// The runtime a cgroup path names.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Runtime {
    Docker,
    Containerd,
    CriO,
    Podman,
    /// A Kubernetes container whose path does not name its runtime (the
    /// cgroupfs driver: containerd, or docker through dockershim).
    Cri,
}

impl Runtime {
    pub fn as_str(self) -> &'static str {
        match self {
            Runtime::Docker => "docker",
            Runtime::Containerd => "containerd",
            Runtime::CriO => "cri-o",
            Runtime::Podman => "podman",
            Runtime::Cri => "cri",
        }
    }
}

impl fmt::Display for Runtime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A container a cgroup path shows.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ContainerRef {
    /// The full id (64 hex digits).
    pub id: String,
    /// `None` when nothing in the path names it (e.g. `/ecs/<task>/<id>`).
    pub runtime: Option<Runtime>,
}

/// What a cgroup path says: the innermost container and the pod, if any.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct CgroupInfo {
    pub container: Option<ContainerRef>,
    /// Kubernetes pod uid, with dashes.
    pub pod_uid: Option<String>,
}

/// True for a container id as runtimes write them: 64 lowercase hex digits.
pub fn is_container_id(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

fn is_hex(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// A pod uid with dashes (8-4-4-4-12 hex), or the 32 hex digits of a static
/// pod's config hash, as kubelet names it.
fn pod_uid(s: &str) -> Option<String> {
    let parts: Vec<&str> = s.split('-').collect();
    let uuid = parts.len() == 5
        && parts.iter().map(|p| p.len()).eq([8, 4, 4, 4, 12])
        && parts.iter().all(|p| is_hex(p));
    (uuid || (s.len() == 32 && is_hex(s))).then(|| s.to_ascii_lowercase())
}

/// systemd unit prefixes of container scopes, and their runtime. The conmon
/// prefixes come first: they are the monitor's scope, not the container's.
const SCOPE_PREFIXES: [(&str, Option<Runtime>); 7] = [
    ("crio-conmon-", None),
    ("libpod-conmon-", None),
    ("docker-", Some(Runtime::Docker)),
    ("cri-containerd-", Some(Runtime::Containerd)),
    ("crio-", Some(Runtime::CriO)),
    ("libpod-", Some(Runtime::Podman)),
    ("nerdctl-", Some(Runtime::Containerd)),
];

/// The container a `<prefix><id>` segment names (`.scope` already removed
/// for the systemd driver); `Some(None)` for a conmon scope.
fn prefixed(name: &str) -> Option<Option<ContainerRef>> {
    SCOPE_PREFIXES.iter().find_map(|(prefix, runtime)| {
        let id = name.strip_prefix(prefix)?;
        if !is_container_id(id) {
            return None;
        }
        Some(runtime.map(|runtime| ContainerRef {
            id: id.to_string(),
            runtime: Some(runtime),
        }))
    })
}

/// The pod uid a segment names: `pod<uid>` (cgroupfs) or
/// `kubepods[-<qos>]-pod<uid_with_underscores>.slice` (systemd).
fn pod_segment(seg: &str) -> Option<String> {
    if let Some(slice) = seg.strip_suffix(".slice") {
        let (_, uid) = slice.rsplit_once("-pod")?;
        if !slice.starts_with("kubepods") {
            return None;
        }
        return pod_uid(&uid.replace('_', "-"));
    }
    pod_uid(seg.strip_prefix("pod")?)
}

/// Reads the container and pod out of a cgroup path (absolute or relative to
/// the cgroup2 mount; v1 paths from `/proc/PID/cgroup` work too).
pub fn parse_cgroup_path(path: &str) -> CgroupInfo {
    let mut info = CgroupInfo::default();
    // The runtime a bare `<id>` segment belongs to, from the segments above.
    let mut context: Option<Runtime> = None;
    let mut in_kubepods = false;
    for seg in path.split('/').filter(|s| !s.is_empty()) {
        if seg == "kubepods" || seg.starts_with("kubepods.") || seg.starts_with("kubepods-") {
            in_kubepods = true;
            context = Some(Runtime::Cri);
        }
        if in_kubepods && let Some(uid) = pod_segment(seg) {
            info.pod_uid = Some(uid);
            continue;
        }
        let name = seg.strip_suffix(".scope").unwrap_or(seg);
        if let Some(found) = prefixed(name) {
            // A conmon scope is no container, and hides no outer one either.
            info.container = found;
            continue;
        }
        if is_container_id(seg) {
            info.container = Some(ContainerRef {
                id: seg.to_string(),
                runtime: context,
            });
            continue;
        }
        match seg {
            "docker" => context = Some(Runtime::Docker),
            "libpod_parent" => context = Some(Runtime::Podman),
            _ => {}
        }
    }
    info
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "3f4e2c1d0b9a8f7e6d5c4b3a291807f6e5d4c3b2a1908f7e6d5c4b3a29180706";
    const ID2: &str = "9c0b1a2f3e4d5c6b7a8f9e0d1c2b3a4f5e6d7c8b9a0f1e2d3c4b5a6f7e8d9c0b";
    const UID: &str = "5e7f1c3a-9b2d-4e6f-8a0c-1d3e5f7a9b2c";

    fn parsed(path: &str) -> (Option<(&'static str, String)>, Option<String>) {
        let info = parse_cgroup_path(path);
        (
            info.container
                .map(|c| (c.runtime.map_or("", Runtime::as_str), c.id)),
            info.pod_uid,
        )
    }

    fn container(runtime: &'static str, id: &str) -> Option<(&'static str, String)> {
        Some((runtime, id.to_string()))
    }

    #[test]
    fn docker_systemd_and_cgroupfs() {
        assert_eq!(
            parsed(&format!("/system.slice/docker-{ID}.scope")),
            (container("docker", ID), None)
        );
        assert_eq!(
            parsed(&format!("/docker/{ID}")),
            (container("docker", ID), None)
        );
        // systemd inside the container made cgroups of its own.
        assert_eq!(
            parsed(&format!("/system.slice/docker-{ID}.scope/init.scope")),
            (container("docker", ID), None)
        );
        // v1 line from /proc/PID/cgroup, as on cgroupfs-driver hosts.
        assert_eq!(
            parsed(&format!("/docker/{ID}/")),
            (container("docker", ID), None)
        );
    }

    #[test]
    fn containerd_under_kubernetes_both_drivers() {
        let systemd_uid = UID.replace('-', "_");
        assert_eq!(
            parsed(&format!(
                "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{systemd_uid}.slice/cri-containerd-{ID}.scope"
            )),
            (container("containerd", ID), Some(UID.to_string()))
        );
        // Guaranteed QoS pods have no QoS slice.
        assert_eq!(
            parsed(&format!(
                "/kubepods.slice/kubepods-pod{systemd_uid}.slice/cri-containerd-{ID}.scope"
            )),
            (container("containerd", ID), Some(UID.to_string()))
        );
        for qos in ["burstable/", "besteffort/", ""] {
            assert_eq!(
                parsed(&format!("/kubepods/{qos}pod{UID}/{ID}")),
                (container("cri", ID), Some(UID.to_string())),
                "{qos}"
            );
        }
    }

    #[test]
    fn cri_o_and_its_conmon() {
        let systemd_uid = UID.replace('-', "_");
        let pod = format!(
            "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{systemd_uid}.slice"
        );
        assert_eq!(
            parsed(&format!("{pod}/crio-{ID}.scope")),
            (container("cri-o", ID), Some(UID.to_string()))
        );
        assert_eq!(
            parsed(&format!("{pod}/crio-conmon-{ID}.scope")),
            (None, Some(UID.to_string()))
        );
        assert_eq!(
            parsed(&format!("/kubepods/besteffort/pod{UID}/crio-{ID}")),
            (container("cri-o", ID), Some(UID.to_string()))
        );
    }

    #[test]
    fn podman_root_rootless_and_cgroupfs() {
        assert_eq!(
            parsed(&format!("/machine.slice/libpod-{ID}.scope")),
            (container("podman", ID), None)
        );
        assert_eq!(
            parsed(&format!(
                "/user.slice/user-1000.slice/user@1000.service/user.slice/libpod-{ID}.scope/container"
            )),
            (container("podman", ID), None)
        );
        assert_eq!(
            parsed(&format!("/machine.slice/libpod-conmon-{ID}.scope")),
            (None, None)
        );
        assert_eq!(
            parsed(&format!("/libpod_parent/libpod-{ID}")),
            (container("podman", ID), None)
        );
        assert_eq!(
            parsed(&format!("/libpod_parent/{ID}")),
            (container("podman", ID), None)
        );
    }

    #[test]
    fn docker_driven_kubernetes_and_nested_containers() {
        let systemd_uid = UID.replace('-', "_");
        assert_eq!(
            parsed(&format!(
                "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{systemd_uid}.slice/docker-{ID}.scope"
            )),
            (container("docker", ID), Some(UID.to_string()))
        );
        // A kind node: Kubernetes inside a docker container. The innermost wins.
        assert_eq!(
            parsed(&format!("/docker/{ID2}/kubepods/besteffort/pod{UID}/{ID}")),
            (container("cri", ID), Some(UID.to_string()))
        );
        assert_eq!(
            parsed(&format!("/system.slice/docker-{ID2}.scope/kubelet.slice")),
            (container("docker", ID2), None)
        );
    }

    #[test]
    fn static_pods_and_pod_level_cgroups() {
        let hash = "6b0a1d2e3f4a5b6c7d8e9f0a1b2c3d4e";
        assert_eq!(
            parsed(&format!("/kubepods/burstable/pod{hash}/{ID}")),
            (container("cri", ID), Some(hash.to_string()))
        );
        // The pod's own cgroup: a pod, no container yet.
        let systemd_uid = UID.replace('-', "_");
        assert_eq!(
            parsed(&format!(
                "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{systemd_uid}.slice"
            )),
            (None, Some(UID.to_string()))
        );
    }

    #[test]
    fn host_paths_show_nothing() {
        for path in [
            "/",
            "",
            "/user.slice/user-1000.slice/session-3.scope",
            "/system.slice/sshd.service",
            "/system.slice/docker.service",
            "/system.slice/containerd.service",
            "/kubepods.slice",
            "/kubepods.slice/kubepods-burstable.slice",
            // Too short to be an id, or not hex.
            "/system.slice/docker-3f4e2c1d0b9a.scope",
            "/docker/not-a-container-id",
            // A pod segment outside kubepods is just a name.
            &format!("/user.slice/pod{UID}"),
        ] {
            assert_eq!(parsed(path), (None, None), "{path}");
        }
    }

    #[test]
    fn bare_ids_outside_a_known_parent_have_no_runtime() {
        assert_eq!(
            parsed(&format!("/ecs/0a1b2c3d4e5f60718293a4b5c6d7e8f9/{ID}")),
            (container("", ID), None)
        );
    }

    #[test]
    fn ids_are_64_lowercase_hex_digits() {
        assert!(is_container_id(ID));
        assert!(!is_container_id(&ID[..63]));
        assert!(!is_container_id(&ID.to_uppercase()));
        assert!(!is_container_id(&format!("{}g", &ID[..63])));
    }
}
