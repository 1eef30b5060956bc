/*
 * heartbeat.h: what membrokerd tells systemd: STATUS= with live figures and WATCHDOG=1, the latter
 * only after a request sent on a fresh connection through the broker's own socket came back, so a
 * wedged request path (stuck lock, no free context, a listener that stopped accepting) stops the
 * pings and systemd restarts the broker. A probe that fails is logged and changes nothing else: a
 * restart of the listener would drop every client's connection, which is what an attacker wants.
 */
#ifndef MB_HEARTBEAT_H
#define MB_HEARTBEAT_H

#include <stdbool.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>

#include <nng/nng.h>

#include "broker.h"

typedef struct mb_heartbeat {
	char url[512];
	bool watchdog;	      /* systemd asked for WATCHDOG=1 pings */
	uint64_t interval_ms; /* between probes: 1 s, or half the watchdog timeout if shorter */
	uint64_t probe_timeout_ms;	 /* how long a probe waits for its answer */
	uint64_t next_ping_ms;		 /* CLOCK_MONOTONIC time of the next watchdog ping */
	atomic_uint_fast64_t last_ok_ms; /* when a probe last succeeded */
	/* Probes run on their own thread, so that an nng call that never returns cannot stop
	 * the main loop from handling signals; the watchdog then simply stops being pinged. */
	pthread_t thread;
	bool started;
	pthread_mutex_t lock;
	pthread_cond_t cv;
	bool stop;
} mb_heartbeat;

/* Reads the watchdog settings ($WATCHDOG_USEC); url is the broker's RPC address. */
void mb_heartbeat_init(mb_heartbeat *h, const char *url);

/* Starts the probe thread. 0 or -errno. */
int mb_heartbeat_start(mb_heartbeat *h);

/* Longest the main loop may sleep before calling mb_heartbeat_tick again. */
uint64_t mb_heartbeat_sleep_ms(const mb_heartbeat *h, uint64_t otherwise);

/* Sends STATUS=, and WATCHDOG=1 when a ping is due and a probe succeeded recently. */
void mb_heartbeat_tick(mb_heartbeat *h, mb_broker *b);

/*
 * Connects to url afresh and sends one request: 0 when a broker answered within timeout_ms, else
 * an nng error. Waits for the answer before closing, so a listener never sees it hang up
 * mid-handshake.
 */
int mb_probe(const char *url, int timeout_ms);

void mb_heartbeat_fini(mb_heartbeat *h);

#endif
