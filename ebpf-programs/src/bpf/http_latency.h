/* SPDX-License-Identifier: GPL-2.0 OR Apache-2.0 */
/*
 * Layouts shared by http_latency.bpf.c and the agent (mirror:
 * ebpf-programs/src/http_latency.rs, size-asserted).
 */
#ifndef CORAL_HTTP_LATENCY_H
#define CORAL_HTTP_LATENCY_H

/* Bytes of the request kept: method, path and the start of the version. */
#define CORAL_HTTP_REQ_LEN 128
/* Bytes of the response kept: "HTTP/1.1 200 OK". */
#define CORAL_HTTP_RESP_LEN 16

/* Per (tgid, fd) phase. */
#define CORAL_HTTP_IDLE_SERVER 1 /* accepted socket, no request in flight */
#define CORAL_HTTP_IN_REQUEST 2	 /* request read, response not written yet */
#define CORAL_HTTP_IDLE_CLIENT 3 /* connected socket, no request in flight */
#define CORAL_HTTP_CLIENT_SENT 4 /* request written, response not read yet */

struct coral_http_conn_key {
	__u32 tgid;
	__u32 fd;
};

struct coral_http_conn {
	__u64 start_ns;
	__u32 phase;
	__u32 pad;
	char req[CORAL_HTTP_REQ_LEN];
};

/* One finished request, sent to the agent through the ring buffer. */
struct coral_http_event {
	__u64 start_ns;
	__u64 end_ns;
	__u32 tgid;
	__u32 client;
	char comm[16];
	char req[CORAL_HTTP_REQ_LEN];
	char resp[CORAL_HTTP_RESP_LEN];
};

#endif
