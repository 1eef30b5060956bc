/*
 * heartbeat.c: systemd status and a watchdog tied to the request path.
 */
#include "heartbeat.h"

#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include <nng/protocol/reqrep0/req.h>
#include <systemd/sd-daemon.h>

#include "clock.h"
#include "log.h"
#include "mb_wire.h"

void mb_heartbeat_init(mb_heartbeat *h, const char *url)
{
	uint64_t usec = 0;

	memset(h, 0, sizeof(*h));
	snprintf(h->url, sizeof(h->url), "%s", url);
	/* Probe every second, or at half the watchdog interval if that is shorter. A probe may
	 * wait long for its answer (a slow broker is not a stuck one, and giving up early would
	 * itself hang up mid-handshake), but not so long that the watchdog fires meanwhile. */
	h->interval_ms = 1000;
	h->probe_timeout_ms = 10000;
	if (sd_watchdog_enabled(0, &usec) > 0 && usec >= 2000) {
		h->watchdog = true;
		if (usec / 2000 < h->interval_ms)
			h->interval_ms = usec / 2000;
		if (usec / 2000 < h->probe_timeout_ms)
			h->probe_timeout_ms = usec / 2000;
	}
	h->next_ping_ms = mb_now_ms();
	atomic_init(&h->last_ok_ms, 0);
	pthread_mutex_init(&h->lock, NULL);
	pthread_condattr_t ca;
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&h->cv, &ca);
	pthread_condattr_destroy(&ca);
}

uint64_t mb_heartbeat_sleep_ms(const mb_heartbeat *h, uint64_t otherwise)
{
	return h->interval_ms < otherwise ? h->interval_ms : otherwise;
}

int mb_probe(const char *url, int timeout_ms)
{
	Membroker__V1__Request req = MEMBROKER__V1__REQUEST__INIT;
	Membroker__V1__MemoryLoad ml = MEMBROKER__V1__MEMORY_LOAD__INIT;
	nng_socket sock;
	nng_msg *msg = NULL;
	mb_response *resp;
	int rv;

	/* A fresh connection each time: what is checked is that the broker still accepts and
	 * answers new clients, not only that an old connection still works. */
	if ((rv = nng_req0_open(&sock)) != 0)
		return rv;
	nng_socket_set_ms(sock, NNG_OPT_REQ_RESENDTIME, NNG_DURATION_INFINITE);
	nng_socket_set_size(sock, NNG_OPT_RECVMAXSZ, MB_WIRE_MAX_MESSAGE);
	nng_socket_set_ms(sock, NNG_OPT_SENDTIMEO, timeout_ms);
	nng_socket_set_ms(sock, NNG_OPT_RECVTIMEO, timeout_ms);
	if ((rv = nng_dial(sock, url, NULL, 0)) != 0)
		goto out;
	/* A request without Hello: answered HOST_E_CLRNOTAVAILABLE, which still went through
	 * the handshake, decode, the broker lock, dispatch and a context's reply. */
	req.request_id = 1;
	req.body_case = MEMBROKER__V1__REQUEST__BODY_MEMORY_LOAD;
	req.memory_load = &ml;
	if ((rv = mb_wire_pack_request(&req, &msg)) != 0)
		goto out;
	if ((rv = nng_sendmsg(sock, msg, 0)) != 0) {
		nng_msg_free(msg);
		goto out;
	}
	if ((rv = nng_recvmsg(sock, &msg, 0)) != 0)
		goto out;
	resp = mb_wire_unpack_response(nng_msg_body(msg), nng_msg_len(msg));
	nng_msg_free(msg);
	rv = resp != NULL && resp->request_id == 1 ? 0 : NNG_EPROTO;
	mb_wire_free_response(resp);
out:
	nng_close(sock);
	return rv;
}

static void *probe_main(void *arg)
{
	mb_heartbeat *h = arg;

	pthread_mutex_lock(&h->lock);
	while (!h->stop) {
		pthread_mutex_unlock(&h->lock);
		int rv = mb_probe(h->url, (int)h->probe_timeout_ms);
		if (rv == 0)
			atomic_store(&h->last_ok_ms, mb_now_ms());
		else
			mb_log(LOG_WARNING, "a new connection to %s was not answered (%s)", h->url,
			       nng_strerror(rv));
		struct timespec ts;
		clock_gettime(CLOCK_MONOTONIC, &ts);
		ts.tv_sec += (time_t)(h->interval_ms / 1000);
		ts.tv_nsec += (long)(h->interval_ms % 1000) * 1000000;
		if (ts.tv_nsec >= 1000000000) {
			ts.tv_sec++;
			ts.tv_nsec -= 1000000000;
		}
		pthread_mutex_lock(&h->lock);
		if (!h->stop)
			pthread_cond_timedwait(&h->cv, &h->lock, &ts);
	}
	pthread_mutex_unlock(&h->lock);
	return NULL;
}

int mb_heartbeat_start(mb_heartbeat *h)
{
	int rv = pthread_create(&h->thread, NULL, probe_main, h);
	if (rv != 0)
		return -rv;
	h->started = true;
	return 0;
}

void mb_heartbeat_tick(mb_heartbeat *h, mb_broker *b)
{
	uint64_t now = mb_now_ms();
	uint32_t clients, waiters;
	uint64_t in_use, budget;

	/* Memory in use, as status and metrics show it: unused commit credit is not counted. */
	mb_broker_usage(b, &clients, &in_use, &budget, &waiters);
	sd_notifyf(0, "STATUS=%u clients, %" PRIu64 " of %" PRIu64 " MiB committed, %u waiting",
		   clients, in_use >> 20, budget >> 20, waiters);

	if (!h->watchdog || now < h->next_ping_ms)
		return;
	h->next_ping_ms = now + h->interval_ms;
	/* Only while probes succeed: a broker that stopped answering new connections is
	 * restarted by systemd. */
	uint64_t ok = atomic_load(&h->last_ok_ms);
	if (ok != 0 && now - ok <= 2 * h->interval_ms + h->probe_timeout_ms)
		sd_notify(0, "WATCHDOG=1");
}

void mb_heartbeat_fini(mb_heartbeat *h)
{
	struct timespec ts;

	if (!h->started)
		return;
	pthread_mutex_lock(&h->lock);
	h->stop = true;
	pthread_cond_signal(&h->cv);
	pthread_mutex_unlock(&h->lock);
	/* A probe stuck inside nng must not hold up the shutdown. */
	clock_gettime(CLOCK_REALTIME, &ts);
	ts.tv_sec += 2;
	if (pthread_timedjoin_np(h->thread, NULL, &ts) != 0)
		pthread_detach(h->thread);
	h->started = false;
}
