/* SPDX-License-Identifier: GPL-2.0 OR Apache-2.0 */
/*
 * Layouts shared by http_latency.bpf.c and the agent (mirror:
 * ebpf-programs/src/http_latency.rs, size-asserted and checked field by
 * field by the layout test).
 */
#ifndef CORAL_HTTP_LATENCY_H
#define CORAL_HTTP_LATENCY_H

/* Bytes of the request kept: method, path and the start of the version. */
#define CORAL_HTTP_REQ_LEN 128
/* Bytes of the response kept: "HTTP/1.1 200 OK". */
#define CORAL_HTTP_RESP_LEN 16

/* Per connection phase. */
#define CORAL_HTTP_IDLE_SERVER 1 /* a request was answered, none in flight */
#define CORAL_HTTP_IN_REQUEST 2	 /* request read, response not written yet */
#define CORAL_HTTP_IDLE_CLIENT 3 /* a response was read, no request in flight */
#define CORAL_HTTP_CLIENT_SENT 4 /* request written, response not read yet */

/* coral_http_event.flags */
#define CORAL_HTTP_F_CLIENT 1 /* an outgoing request: this process is the client */
#define CORAL_HTTP_F_TLS 2    /* plaintext read at the TLS library (uprobes) */

/* A socket connection: (tgid, fd). */
struct coral_http_conn_key {
	__u32 tgid;
	__u32 fd;
};

/* A TLS connection: (tgid, SSL *). */
struct coral_http_tls_key {
	__u32 tgid;
	__u32 pad;
	__u64 ssl;
};

struct coral_http_conn {
	__u64 start_ns;
	/*
	 * bpf_get_current_cgroup_id() when the connection's first request began:
	 * read once per connection, not per request (it walks task->cgroups; a
	 * process that moves cgroup keeps its open connections' old id).
	 */
	__u64 cgroup_id;
	__u32 phase;
	/* Bytes of req that are the request's (the rest is stale). */
	__u32 len;
	char req[CORAL_HTTP_REQ_LEN];
};

/* One finished request, sent to the agent through the ring buffer. */
struct coral_http_event {
	__u64 start_ns;
	__u64 end_ns;
	/* bpf_get_current_cgroup_id(): the cgroup v2 id, resolved by the agent. */
	__u64 cgroup_id;
	__u32 tgid;
	__u32 flags;
	/* Bytes of req that are the request's. */
	__u32 req_len;
	__u32 pad;
	char comm[16];
	char req[CORAL_HTTP_REQ_LEN];
	char resp[CORAL_HTTP_RESP_LEN];
};

/* A process the agent may have to attach TLS uprobes to (exec or fork). */
struct coral_http_proc_event {
	__u32 tgid;
	__u32 pad;
};

#endif
