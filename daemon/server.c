/*
 * server.c: nng's asynchronous REP pattern (as in nng's demo/async/server.c): each context cycles
 * RECV -> dispatch -> SEND -> RECV on nng's worker threads, so a request never waits for a thread
 * and a slow client never blocks another.
 */
#include "server.h"

#include <stdlib.h>
#include <string.h>

#include <nng/nng.h>
#include <nng/protocol/reqrep0/rep.h>

#include "dispatch.h"
#include "log.h"
#include "mb_address.h"
#include "mb_wire.h"

/* A reply the client does not read within this time is dropped with its connection. */
#define SEND_TIMEOUT_MS 5000

typedef struct work {
	enum { WORK_RECV, WORK_SEND } state;
	nng_aio *aio;
	nng_ctx ctx;
	struct mb_server *srv;
} work;

struct mb_server {
	nng_socket sock;
	mb_broker *broker;
	int nworks;
	work *works;
};

static void work_recv(work *w)
{
	w->state = WORK_RECV;
	nng_aio_set_timeout(w->aio, NNG_DURATION_INFINITE);
	nng_ctx_recv(w->ctx, w->aio);
}

static void work_cb(void *arg)
{
	work *w = arg;
	nng_msg *msg;
	nng_pipe pipe;
	int rv = nng_aio_result(w->aio);

	switch (w->state) {
	case WORK_RECV:
		if (rv == NNG_ECLOSED || rv == NNG_ECANCELED)
			return; /* shutting down */
		if (rv != 0) {
			work_recv(w);
			return;
		}
		msg = nng_aio_get_msg(w->aio);
		pipe = nng_msg_get_pipe(msg);
		if (mb_dispatch(w->srv->broker, (uint32_t)nng_pipe_id(pipe), nng_msg_body(msg),
				nng_msg_len(msg), &msg) != 0) {
			/* Not a request we can answer: drop the connection, which ends its
			 * session and returns everything it held. */
			mb_log(LOG_NOTICE, "pipe %d sent a malformed request; closing it",
			       nng_pipe_id(pipe));
			nng_msg_free(msg);
			nng_pipe_close(pipe);
			work_recv(w);
			return;
		}
		w->state = WORK_SEND;
		nng_aio_set_msg(w->aio, msg);
		nng_aio_set_timeout(w->aio, SEND_TIMEOUT_MS);
		nng_ctx_send(w->ctx, w->aio);
		return;
	case WORK_SEND:
		if (rv != 0) {
			msg = nng_aio_get_msg(w->aio);
			if (msg != NULL) {
				pipe = nng_msg_get_pipe(msg);
				nng_msg_free(msg);
				if (rv == NNG_ETIMEDOUT && nng_pipe_id(pipe) > 0)
					nng_pipe_close(pipe);
			}
			if (rv == NNG_ECLOSED)
				return;
		}
		work_recv(w);
		return;
	}
}

static void pipe_cb(nng_pipe p, nng_pipe_ev ev, void *arg)
{
	mb_server *srv = arg;
	uint64_t pid = 0, uid = 0, gid = 0;

	if (ev == NNG_PIPE_EV_ADD_POST) {
		/* Peer credentials are uint64 options; get_int fails with NNG_EBADTYPE. */
		if (nng_pipe_get_uint64(p, NNG_OPT_IPC_PEER_PID, &pid) != 0 ||
		    nng_pipe_get_uint64(p, NNG_OPT_IPC_PEER_UID, &uid) != 0 ||
		    nng_pipe_get_uint64(p, NNG_OPT_IPC_PEER_GID, &gid) != 0) {
			mb_log(LOG_WARNING, "pipe %d: no peer credentials; closing it", nng_pipe_id(p));
			nng_pipe_close(p);
			return;
		}
		if (mb_broker_connect(srv->broker, (uint32_t)nng_pipe_id(p), (pid_t)pid, (uid_t)uid,
				      (gid_t)gid) != 0)
			nng_pipe_close(p);
	} else if (ev == NNG_PIPE_EV_REM_POST) {
		mb_broker_disconnect(srv->broker, (uint32_t)nng_pipe_id(p));
	}
}

int mb_server_start(mb_broker *b, const char *url, int contexts, mb_server **out)
{
	mb_server *srv = calloc(1, sizeof(*srv));
	nng_listener l;
	int rv;

	if (srv == NULL)
		return NNG_ENOMEM;
	srv->broker = b;
	if ((rv = nng_rep0_open(&srv->sock)) != 0) {
		free(srv);
		return rv;
	}
	/* Before the listener exists, so no connection ever sees an unlimited size. */
	if ((rv = nng_socket_set_size(srv->sock, NNG_OPT_RECVMAXSZ, MB_WIRE_MAX_MESSAGE)) != 0 ||
	    (rv = nng_pipe_notify(srv->sock, NNG_PIPE_EV_ADD_POST, pipe_cb, srv)) != 0 ||
	    (rv = nng_pipe_notify(srv->sock, NNG_PIPE_EV_REM_POST, pipe_cb, srv)) != 0 ||
	    (rv = nng_listener_create(&l, srv->sock, url)) != 0)
		goto fail;
	if (mb_address_ipc_path(url) != NULL &&
	    (rv = nng_listener_set_int(l, NNG_OPT_IPC_PERMISSIONS, 0660)) != 0)
		goto fail;
	if ((rv = nng_listener_start(l, 0)) != 0)
		goto fail;

	srv->works = calloc((size_t)contexts, sizeof(work));
	if (srv->works == NULL) {
		rv = NNG_ENOMEM;
		goto fail;
	}
	for (int i = 0; i < contexts; i++) {
		work *w = &srv->works[i];
		w->srv = srv;
		if ((rv = nng_aio_alloc(&w->aio, work_cb, w)) != 0)
			goto fail;
		srv->nworks++;
		if ((rv = nng_ctx_open(&w->ctx, srv->sock)) != 0)
			goto fail;
	}
	for (int i = 0; i < srv->nworks; i++)
		work_recv(&srv->works[i]);
	*out = srv;
	return 0;
fail:
	mb_server_stop(srv);
	return rv;
}

void mb_server_stop(mb_server *srv)
{
	if (srv == NULL)
		return;
	/* Order matters (nng #1543): stop the state machines, close the socket, then free. */
	for (int i = 0; i < srv->nworks; i++)
		nng_aio_stop(srv->works[i].aio);
	nng_close(srv->sock);
	for (int i = 0; i < srv->nworks; i++)
		nng_aio_free(srv->works[i].aio);
	free(srv->works);
	free(srv);
}
