/*
 * transport.c: requests to the broker and their answers: REQ contexts kept in a pool (slots), one
 * call = one request and its reply, the failure text of the calling thread, and what counts as a
 * lost connection or a broken broker. Nothing here knows Hello or sections (connection.c).
 */
#include "transport.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

#include <nng/nng.h>

#include "client_internal.h"

#define DEFAULT_TIMEOUT_MS 30000
#define SEND_TIMEOUT_MS	   5000

_Thread_local uint64_t mb_thread_round_trips;

static _Thread_local char last_error[MB_CLIENT_ERROR_MAX];

const char *mb_last_error(void)
{
	return last_error;
}

void mb_client_clear_error(void)
{
	last_error[0] = '\0';
}

HRESULT mb_client_error(HRESULT hr, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(last_error, sizeof(last_error), fmt, ap);
	va_end(ap);
	return hr;
}

int mb_client_timeout_ms(void)
{
	static atomic_int cached;
	int v = atomic_load(&cached);

	if (v == 0) {
		const char *env = getenv("MEMBROKER_TIMEOUT_MS");
		long t = env ? strtol(env, NULL, 10) : 0;
		v = (t > 0 && t < 3600000) ? (int)t : DEFAULT_TIMEOUT_MS;
		atomic_store(&cached, v);
	}
	return v;
}

mb_call_slot *mb_client_slot_new(mb_client *c)
{
	mb_call_slot *s = calloc(1, sizeof(*s));

	if (s == NULL)
		return NULL;
	if (nng_ctx_open(&s->ctx, c->sock) != 0) {
		free(s);
		return NULL;
	}
	if (nng_aio_alloc(&s->aio, NULL, NULL) != 0) {
		nng_ctx_close(s->ctx);
		free(s);
		return NULL;
	}
	return s;
}

static mb_call_slot *slot_get(mb_client *c)
{
	mb_call_slot *s;

	pthread_mutex_lock(&c->slot_lock);
	s = c->free_slots;
	if (s != NULL)
		c->free_slots = s->next;
	pthread_mutex_unlock(&c->slot_lock);
	return s != NULL ? s : mb_client_slot_new(c);
}

static void slot_put(mb_client *c, mb_call_slot *s)
{
	pthread_mutex_lock(&c->slot_lock);
	s->next = c->free_slots;
	c->free_slots = s;
	pthread_mutex_unlock(&c->slot_lock);
}

void mb_client_slot_free(mb_call_slot *s)
{
	nng_aio_free(s->aio);
	nng_ctx_close(s->ctx);
	free(s);
}

static HRESULT transport_failure(mb_client *c, int rv, const char *what)
{
	/* A call the library cancelled itself (the notification thread stopping) lost nothing. */
	if (rv != NNG_ECANCELED)
		atomic_store(&c->lost, true);
	return mb_client_error(HOST_E_CLRNOTAVAILABLE, "%s: %s", what, nng_strerror(rv));
}

/* Whether req may change the broker's books of this client (a lost reply leaves them unknown). */
static bool changes_books(const mb_request *req)
{
	switch (req->body_case) {
	case MEMBROKER__V1__REQUEST__BODY_HELLO:
	case MEMBROKER__V1__REQUEST__BODY_MEMORY_LOAD:
	case MEMBROKER__V1__REQUEST__BODY_SESSION_STATUS:
	case MEMBROKER__V1__REQUEST__BODY_WATCH:
		return false;
	default:
		return true;
	}
}

HRESULT mb_client_call_on(mb_client *c, mb_call_slot *slot, mb_request *req, mb_response **resp,
			  int timeout_ms, uint32_t *pipe_id)
{
	nng_msg *msg = NULL;
	mb_response *r;
	int rv;

	*resp = NULL;
	req->request_id = atomic_fetch_add(&c->next_request_id, 1);
	if ((rv = mb_wire_pack_request(req, &msg)) != 0)
		return mb_client_error(E_OUTOFMEMORY, "cannot build the request: %s",
				       nng_strerror(rv));
	/* Handing a request to a live connection is immediate; a send that waits this long means
	 * the connection is wedged (seen rarely with nng 1.5.2 under load), and a fresh one is the
	 * cure. */
	nng_aio_set_timeout(slot->aio, timeout_ms < SEND_TIMEOUT_MS ? timeout_ms : SEND_TIMEOUT_MS);
	nng_aio_set_msg(slot->aio, msg);
	atomic_fetch_add(&c->round_trips, 1);
	mb_thread_round_trips++;
	nng_ctx_send(slot->ctx, slot->aio);
	nng_aio_wait(slot->aio);
	if ((rv = nng_aio_result(slot->aio)) != 0) {
		nng_msg_free(nng_aio_get_msg(slot->aio));
		nng_aio_set_msg(slot->aio, NULL);
		if (rv == NNG_ECANCELED)
			return mb_client_error(E_ABORT, "the call was cancelled");
		if (rv == NNG_ETIMEDOUT && atomic_load(&c->pipes) > 0) {
			nng_pipe p = NNG_PIPE_INITIALIZER;
			p.id = atomic_load(&c->session_pipe);
			if (p.id != 0)
				nng_pipe_close(p); /* nng redials; the next call reconnects */
		}
		return transport_failure(c, rv, "sending to the broker");
	}
	nng_aio_set_timeout(slot->aio, timeout_ms);
	nng_ctx_recv(slot->ctx, slot->aio);
	nng_aio_wait(slot->aio);
	if (rv = nng_aio_result(slot->aio), rv == NNG_ECANCELED)
		/* The library itself cancelled it (only the notification thread's long poll is
		 * ever cancelled): the connection is fine. */
		return mb_client_error(E_ABORT, "the call was cancelled");
	if (rv != 0) {
		/* Timed out or connection lost: the broker may or may not have acted, so the
		 * client cannot trust its own view any more (unless the request only asked). */
		if (changes_books(req))
			atomic_store(&c->unsure, true);
		return transport_failure(c, rv, "waiting for the broker");
	}
	msg = nng_aio_get_msg(slot->aio);
	if (pipe_id != NULL)
		*pipe_id = (uint32_t)nng_pipe_id(nng_msg_get_pipe(msg));
	r = mb_wire_unpack_response(nng_msg_body(msg), nng_msg_len(msg));
	nng_msg_free(msg);
	if (r == NULL || r->request_id != req->request_id) {
		mb_wire_free_response(r);
		atomic_store(&c->disabled, true);
		return mb_client_error(E_FAIL, "the broker sent a malformed response");
	}
	if ((HRESULT)r->hresult == HOST_E_CLRNOTAVAILABLE)
		atomic_store(&c->lost, true); /* the broker has no session for us: connect again */
	else if ((HRESULT)r->hresult == E_FAIL)
		atomic_store(&c->disabled,
			     true); /* E_FAIL disables the client, as the contract says */
	*resp = r;
	return S_OK;
}

HRESULT mb_client_call_via(mb_client *c, mb_request *req, mb_response **resp, uint32_t *pipe_id)
{
	mb_call_slot *slot = slot_get(c);
	HRESULT hr;

	*resp = NULL;
	if (slot == NULL)
		return mb_client_error(E_OUTOFMEMORY, "no memory for a request context");
	hr = mb_client_call_on(c, slot, req, resp, mb_client_timeout_ms(), pipe_id);
	if (hr == HOST_E_CLRNOTAVAILABLE)
		mb_client_slot_free(slot); /* its context may still hold a half-done request */
	else
		slot_put(c, slot);
	return hr;
}

HRESULT mb_client_call(mb_client *c, mb_request *req, mb_response **resp)
{
	return mb_client_call_via(c, req, resp, NULL);
}

HRESULT mb_client_call_simple(mb_client *c, mb_request *req)
{
	mb_response *resp;
	HRESULT hr = mb_client_call(c, req, &resp);

	if (hr != S_OK)
		return hr;
	hr = (HRESULT)resp->hresult;
	if (hr != S_OK)
		mb_client_error(hr, "%s", resp->detail);
	mb_wire_free_response(resp);
	return hr;
}

void mb_client_slots_free(mb_client *c)
{
	mb_call_slot *s;

	while ((s = c->free_slots) != NULL) {
		c->free_slots = s->next;
		mb_client_slot_free(s);
	}
}
