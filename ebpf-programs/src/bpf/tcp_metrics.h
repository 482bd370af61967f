/* SPDX-License-Identifier: GPL-2.0 OR Apache-2.0 */
/*
 * Layouts shared by tcp_metrics.bpf.c and the agent. The Rust mirror lives in
 * ebpf-programs/src/tcp_metrics.rs with compile-time size asserts.
 */
#ifndef CORAL_TCP_METRICS_H
#define CORAL_TCP_METRICS_H

/* Ports per local / remote port filter. */
#define CORAL_TCP_MAX_PORTS 16
/* rtt_log2[i] counts smoothed RTTs in [2^i, 2^(i+1)) microseconds. */
#define CORAL_TCP_RTT_BUCKETS 32

/* coral_tcp_event.flags */
#define CORAL_TCP_ACTIVE (1 << 0)      /* this side connected (else it accepted) */
#define CORAL_TCP_ESTABLISHED (1 << 1) /* reached ESTABLISHED at least once */
#define CORAL_TCP_OWNED (1 << 2)       /* pid/comm known (connect or accept seen) */

/*
 * One closed connection, as handed to user space through the ring buffer.
 * Every field is filled at the latest when the socket enters TCP_CLOSE,
 * except the reset counts, which the abortive close path (SO_LINGER 0)
 * bumps after that: the event is sent when the socket is destroyed.
 */
struct coral_tcp_event {
	__u64 start_ns;   /* bpf_ktime_get_ns at SYN_SENT / SYN_RECV */
	__u64 connect_ns; /* SYN_SENT -> ESTABLISHED; 0 for accepted ones */
	__u64 end_ns;     /* entering TCP_CLOSE */
	__u64 bytes_sent; /* payload the peer acknowledged */
	__u64 bytes_received;
	__u32 pid;
	__u32 retransmits; /* tcp_sock.total_retrans: segments */
	__u32 resets_sent;
	__u32 resets_received;
	__s32 sk_err; /* sk->sk_err at close: ECONNREFUSED, ETIMEDOUT, ... */
	__u16 lport;
	__u16 rport;
	__u8 family;    /* AF_INET (2) or AF_INET6 (10) */
	__u8 flags;     /* CORAL_TCP_* */
	__u8 end_state; /* the state left for TCP_CLOSE */
	__u8 pad;
	__u8 laddr[16]; /* IPv4 in the first 4 bytes */
	__u8 raddr[16];
	char comm[16];
	__u32 pad2;
	__u64 cgroup_id; /* the owner's cgroup v2 id, when it acted on the socket */
};

/*
 * Per-remote aggregates key. Opened connections: (raddr, rport, lport = 0);
 * accepted ones: (raddr, rport = 0, lport), so ephemeral client ports fold.
 */
struct coral_tcp_remote_key {
	__u8 addr[16];
	__u16 rport;
	__u16 lport;
	__u8 family;
	__u8 pad[3];
};

struct coral_tcp_remote {
	__u64 opened;
	__u64 closed;
	__u64 retransmits;
	__u64 resets_sent;
	__u64 resets_received;
	__u64 bytes_sent;
	__u64 bytes_received;
	__u64 rtt_log2[CORAL_TCP_RTT_BUCKETS];
};

/*
 * What a connection has already added to its remote's aggregates, so that
 * counts seen before the connection could be attributed (an accepted
 * socket before accept()) are added once, when it is.
 */
struct coral_tcp_reported {
	__u64 busy; /* try-lock of the update (see sync_remote) */
	__u32 retransmits;
	__u32 resets_sent;
	__u32 resets_received;
	__u8 opened;
	__u8 closed;
	__u8 pad[2];
};

/* Per-socket state, keyed by the struct sock address. */
struct coral_tcp_sock {
	struct coral_tcp_event ev;
	struct coral_tcp_remote_key key;
	struct coral_tcp_reported reported;
	/*
	 * CORAL_SOCK_*, set with atomic ORs: accept() runs without the socket
	 * lock, so it can race with softirq updates of the same socket.
	 */
	__u64 state;
	__u32 probes; /* tcp_probe hits, for 1-in-N RTT sampling */
	__u32 pad;
};

/* coral_tcp_sock.state */
#define CORAL_SOCK_TARGET (1 << 0)      /* the owning process passed the filter */
#define CORAL_SOCK_TUPLE (1 << 1)       /* addresses read, port/prefix filter run */
#define CORAL_SOCK_TUPLE_MATCH (1 << 2) /* ... and passed */
#define CORAL_SOCK_CLOSED (1 << 3)      /* entered TCP_CLOSE; ev complete */
#define CORAL_SOCK_FIN_SENT (1 << 4)    /* went through FIN_WAIT1 or LAST_ACK */

/* drops[] slots */
#define CORAL_TCP_DROP_RINGBUF 0 /* event lost: ring buffer full */
#define CORAL_TCP_DROP_SOCKS 1   /* connection not tracked: socks map full */
#define CORAL_TCP_DROP_REMOTES 2 /* aggregate lost: remotes map full */
#define CORAL_TCP_DROP_SLOTS 3

#endif
