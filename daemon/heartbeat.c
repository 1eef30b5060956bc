/*
 * heartbeat.c: systemd status and a watchdog tied to the request path.
 */
#include "heartbeat.h"

#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include <nng/protocol/reqrep0/req.h>
#include <systemd/sd-daemon.h>

#include "log.h"
#include "mb_wire.h"

void mb_heartbeat_init(mb_heartbeat *h, const char *url)
{
	uint64_t usec = 0;

	memset(h, 0, sizeof(*h));
	snprintf(h->url, sizeof(h->url), "%s", url);
	if (sd_watchdog_enabled(0, &usec) > 0 && usec >= 2000) {
		h->watchdog = true;
		h->interval_ms = usec / 2000;
	}
	h->next_ms = mb_now_ms();
}

uint64_t mb_heartbeat_sleep_ms(const mb_heartbeat *h, uint64_t otherwise)
{
	if (!h->watchdog)
		return otherwise;
	return h->interval_ms < otherwise ? h->interval_ms : otherwise;
}

int mb_heartbeat_ping(mb_heartbeat *h, int timeout_ms)
{
	Membroker__V1__Request req = MEMBROKER__V1__REQUEST__INIT;
	Membroker__V1__MemoryLoad ml = MEMBROKER__V1__MEMORY_LOAD__INIT;
	nng_msg *msg = NULL;
	mb_response *resp;
	int rv;

	if (!h->dialed) {
		if ((rv = nng_req0_open(&h->sock)) != 0)
			return rv;
		nng_socket_set_ms(h->sock, NNG_OPT_REQ_RESENDTIME, NNG_DURATION_INFINITE);
		nng_socket_set_size(h->sock, NNG_OPT_RECVMAXSZ, MB_WIRE_MAX_MESSAGE);
		if ((rv = nng_dial(h->sock, h->url, NULL, 0)) != 0) {
			nng_close(h->sock);
			return rv;
		}
		h->dialed = true;
	}
	nng_socket_set_ms(h->sock, NNG_OPT_SENDTIMEO, timeout_ms);
	nng_socket_set_ms(h->sock, NNG_OPT_RECVTIMEO, timeout_ms);
	/* A request without Hello: answered E_FAIL, which still went through decode, the broker
	 * lock, dispatch and a context's reply. */
	req.request_id = 1;
	req.body_case = MEMBROKER__V1__REQUEST__BODY_MEMORY_LOAD;
	req.memory_load = &ml;
	if ((rv = mb_wire_pack_request(&req, &msg)) != 0)
		return rv;
	if ((rv = nng_sendmsg(h->sock, msg, 0)) != 0) {
		nng_msg_free(msg);
		return rv;
	}
	if ((rv = nng_recvmsg(h->sock, &msg, 0)) != 0)
		return rv;
	resp = mb_wire_unpack_response(nng_msg_body(msg), nng_msg_len(msg));
	nng_msg_free(msg);
	rv = resp != NULL && resp->request_id == 1 ? 0 : NNG_EPROTO;
	mb_wire_free_response(resp);
	return rv;
}

void mb_heartbeat_tick(mb_heartbeat *h, mb_broker *b)
{
	uint64_t now = mb_now_ms();
	uint32_t sessions, waiters;
	uint64_t committed, budget;

	pthread_mutex_lock(&b->lock);
	sessions = b->clients;
	waiters = b->nwaiters;
	committed = b->ledger.committed;
	budget = b->ledger.budget;
	pthread_mutex_unlock(&b->lock);
	sd_notifyf(0, "STATUS=%u clients, %" PRIu64 " of %" PRIu64 " MiB committed, %u waiting",
		   sessions, committed >> 20, budget >> 20, waiters);

	if (!h->watchdog || now < h->next_ms)
		return;
	h->next_ms = now + h->interval_ms;
	int rv = mb_heartbeat_ping(h, (int)(h->interval_ms / 2 > 0 ? h->interval_ms / 2 : 1));
	if (rv == 0)
		sd_notify(0, "WATCHDOG=1");
	else
		mb_log(LOG_WARNING, "watchdog: the request path did not answer (%s); no ping sent",
		       nng_strerror(rv));
}

void mb_heartbeat_fini(mb_heartbeat *h)
{
	if (h->dialed)
		nng_close(h->sock);
	h->dialed = false;
}
