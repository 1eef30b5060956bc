/*
 * server.c: nng's asynchronous REP pattern (as in nng's demo/async/server.c): each context cycles
 * RECV -> dispatch -> SEND -> RECV on nng's worker threads, so a request never waits for a thread
 * and a slow client never blocks another.
 */
#include "server.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <nng/nng.h>
#include <nng/protocol/reqrep0/rep.h>

#include "clock.h"
#include "creds.h"
#include "dispatch.h"
#include "inflight.h"
#include "log.h"
#include "mb_address.h"
#include "mb_wire.h"

/* A reply the client does not read within this time is dropped (a client that never reads must not
 * pin a context forever; a merely slow one on a loaded machine must not lose its reply). The
 * connection stays: closing a pipe whose replies are stuck can wedge nng 1.5.2's reaper. */
#define SEND_TIMEOUT_MS 30000
/* Contexts kept receiving while others are parked (waiting commits, watches). */
#define MIN_RECEIVING 8
/* Upper bound of contexts, so parked requests cannot grow the broker without limit. */
#define MAX_WORKS 8192

typedef struct work {
	enum { WORK_RECV, WORK_WAIT, WORK_SEND } state;
	nng_aio *aio;
	nng_ctx ctx;
	struct mb_server *srv;
	mb_parked park;
	uint32_t pipe_id; /* of the request in hand, counted in srv->inflight */
	struct work *next;
	struct work *next_ready; /* on the waker's list of parked requests with an outcome */
} work;

struct mb_server {
	nng_socket sock;
	nng_listener listener;
	char url[512];
	int mode;  /* socket file mode */
	gid_t gid; /* socket file group, or (gid_t)-1 */
	mb_broker *broker;
	pthread_mutex_t lock; /* guards works, nworks and inflight */
	work *works;
	int nworks;
	mb_inflight *inflight; /* requests in flight per connection and per uid */
	atomic_int receiving;  /* contexts waiting in nng_ctx_recv */
	atomic_int busy;       /* contexts parked or sending */

	/*
	 * The waker answers parked requests. It sleeps until the earliest deadline or until the
	 * broker finishes a parked request, and then sends the reply with nng_ctx_send from its
	 * own thread. Parked requests keep no nng operation pending (no timer, nothing to
	 * cancel): nng 1.5.2 can complete an aio twice when a cancel races its timer.
	 * Lock order: broker lock, then waker_lock.
	 */
	pthread_t waker;
	pthread_mutex_t waker_lock;
	pthread_cond_t waker_cv;
	work *ready; /* parked requests with an outcome, to answer */
	/* Connections to close: the waker closes them, never one of nng's callbacks (nng 1.5.2
	 * can wedge its reaper when a pipe is closed from its own callback while a reply to it is
	 * stuck in a full socket buffer). */
	struct closing {
		uint32_t pipe_id;
	} * closing;
	size_t nclosing, closing_cap;
	uint64_t next_deadline; /* earliest deadline the waker knows of (ms), 0 = none */
	bool waker_stop;
	bool waker_started;
};

static int add_work(mb_server *srv);

/* Has the waker close connection pipe_id soon. Safe from any thread, nng's callbacks included. */
static void close_later(mb_server *srv, uint32_t pipe_id)
{
	pthread_mutex_lock(&srv->waker_lock);
	for (size_t i = 0; i < srv->nclosing; i++)
		if (srv->closing[i].pipe_id == pipe_id)
			goto out;
	if (srv->nclosing == srv->closing_cap) {
		size_t cap = srv->closing_cap ? 2 * srv->closing_cap : 16;
		struct closing *n = realloc(srv->closing, cap * sizeof(*n));
		if (n == NULL)
			goto out; /* the connection stays; its requests are still refused */
		srv->closing = n;
		srv->closing_cap = cap;
	}
	srv->closing[srv->nclosing++].pipe_id = pipe_id;
	pthread_cond_signal(&srv->waker_cv);
out:
	pthread_mutex_unlock(&srv->waker_lock);
}
static int open_session(mb_server *srv, nng_pipe p);

static void work_recv(work *w)
{
	w->state = WORK_RECV;
	atomic_fetch_add(&w->srv->receiving, 1);
	nng_aio_set_timeout(w->aio, NNG_DURATION_INFINITE);
	nng_ctx_recv(w->ctx, w->aio);
}

static void work_send(work *w, nng_msg *msg)
{
	w->state = WORK_SEND;
	nng_aio_set_msg(w->aio, msg);
	nng_aio_set_timeout(w->aio, SEND_TIMEOUT_MS);
	nng_ctx_send(w->ctx, w->aio);
}

/* Broker hooks for a parked request; called with the broker lock held. */
static void park_arm(mb_parked *p, uint32_t ms)
{
	work *w = p->owner;
	mb_server *srv = w->srv;

	(void)ms;
	pthread_mutex_lock(&srv->waker_lock);
	if (srv->next_deadline == 0 || p->deadline_ms < srv->next_deadline) {
		srv->next_deadline = p->deadline_ms;
		pthread_cond_signal(&srv->waker_cv);
	}
	pthread_mutex_unlock(&srv->waker_lock);
}

static void park_wake(mb_parked *p)
{
	work *w = p->owner;
	mb_server *srv = w->srv;

	pthread_mutex_lock(&srv->waker_lock);
	w->next_ready = srv->ready;
	srv->ready = w;
	pthread_cond_signal(&srv->waker_cv);
	pthread_mutex_unlock(&srv->waker_lock);
}

static void work_recv(work *w);
static void work_send(work *w, nng_msg *msg);

/* The request w had in hand is answered or dropped: it no longer counts. */
static void request_done(work *w)
{
	mb_server *srv = w->srv;

	pthread_mutex_lock(&srv->lock);
	mb_inflight_done(srv->inflight, w->pipe_id);
	pthread_mutex_unlock(&srv->lock);
	atomic_fetch_sub(&srv->busy, 1);
}

/*
 * Counts a request arriving on pipe against its connection's and its uid's bounds. false: over a
 * bound (or no memory to count it), and the request must not be served.
 */
static bool request_admit(mb_server *srv, nng_pipe pipe)
{
	static mb_log_limit refusals = MB_LOG_LIMIT_INIT;
	uint32_t id = (uint32_t)nng_pipe_id(pipe);
	mb_inflight_result r;
	pid_t pid = 0;
	uid_t uid = 0;
	gid_t gid;

	pthread_mutex_lock(&srv->lock);
	bool known = mb_inflight_pipe(srv->inflight, id) > 0;
	pthread_mutex_unlock(&srv->lock);
	/* The uid is needed only for a connection's first request in flight. */
	if (!known && mb_pipe_peer(pipe, &pid, &uid, &gid) != 0)
		uid = (uid_t)-1; /* unknown: bounded like any non-root uid */
	pthread_mutex_lock(&srv->lock);
	r = mb_inflight_add(srv->inflight, id, uid);
	pthread_mutex_unlock(&srv->lock);
	if (r == MB_INFLIGHT_OK)
		return true;
	mb_log_limited(&refusals, LOG_WARNING, "pipe %u: %s; the request is dropped", (unsigned)id,
		       r == MB_INFLIGHT_PIPE_FULL
			   ? "more requests in flight than one connection may have"
		       : r == MB_INFLIGHT_UID_FULL
			   ? "its uid has more requests in flight than one uid may have"
			   : "no memory to count its request");
	return false;
}

/* Answers one parked request whose outcome is known. */
static void answer(work *w)
{
	mb_server *srv = w->srv;
	nng_msg *msg = NULL;

	if (mb_dispatch_finish(srv->broker, &w->park, true, &msg) == MB_DISPATCH_REPLY) {
		work_send(w, msg);
		return;
	}
	if (msg != NULL)
		nng_msg_free(msg);
	request_done(w);
	work_recv(w);
}

static void *waker_main(void *arg)
{
	mb_server *srv = arg;

	pthread_mutex_lock(&srv->waker_lock);
	while (!srv->waker_stop) {
		if (srv->nclosing > 0) {
			struct closing *closing = srv->closing;
			size_t n = srv->nclosing;
			srv->closing = NULL;
			srv->nclosing = srv->closing_cap = 0;
			pthread_mutex_unlock(&srv->waker_lock);
			for (size_t i = 0; i < n; i++) {
				nng_pipe p = NNG_PIPE_INITIALIZER;
				p.id = closing[i].pipe_id;
				nng_pipe_close(p);
			}
			free(closing);
			pthread_mutex_lock(&srv->waker_lock);
			continue;
		}
		work *ready = srv->ready;
		srv->ready = NULL;
		if (ready != NULL) {
			pthread_mutex_unlock(&srv->waker_lock);
			while (ready != NULL) {
				work *w = ready;
				ready = w->next_ready;
				answer(w);
			}
			pthread_mutex_lock(&srv->waker_lock);
			continue;
		}
		uint64_t now = mb_now_ms();
		if (srv->next_deadline != 0 && now >= srv->next_deadline) {
			/* Deadlines passed: the broker finishes those requests (their wake-ups
			 * land on the ready list) and says when the next one is due. */
			pthread_mutex_unlock(&srv->waker_lock);
			uint64_t next = mb_broker_expire(srv->broker, now);
			pthread_mutex_lock(&srv->waker_lock);
			if (srv->next_deadline <= now || (next != 0 && next < srv->next_deadline))
				srv->next_deadline = next;
			continue;
		}
		if (srv->next_deadline == 0) {
			pthread_cond_wait(&srv->waker_cv, &srv->waker_lock);
		} else {
			struct timespec ts;
			clock_gettime(CLOCK_MONOTONIC, &ts);
			uint64_t ms = srv->next_deadline - now;
			ts.tv_sec += (time_t)(ms / 1000);
			ts.tv_nsec += (long)(ms % 1000) * 1000000;
			if (ts.tv_nsec >= 1000000000) {
				ts.tv_sec++;
				ts.tv_nsec -= 1000000000;
			}
			pthread_cond_timedwait(&srv->waker_cv, &srv->waker_lock, &ts);
		}
	}
	pthread_mutex_unlock(&srv->waker_lock);
	return NULL;
}

static void close_pipe(void *arg, uint32_t pipe_id)
{
	close_later(arg, pipe_id);
}

static void work_cb(void *arg)
{
	static mb_log_limit unread = MB_LOG_LIMIT_INIT;
	work *w = arg;
	mb_server *srv = w->srv;
	nng_msg *msg = NULL;
	nng_pipe pipe;
	int rv = nng_aio_result(w->aio);

	switch (w->state) {
	case WORK_RECV:
		atomic_fetch_sub(&srv->receiving, 1);
		if (rv == NNG_ECLOSED || rv == NNG_ECANCELED)
			return; /* shutting down */
		if (rv != 0) {
			work_recv(w);
			return;
		}
		msg = nng_aio_get_msg(w->aio);
		nng_aio_set_msg(w->aio, NULL);
		pipe = nng_msg_get_pipe(msg);
		/* This context leaves the receiving ones until its reply is sent, which takes as
		 * long as its client takes to read: keep enough others receiving. */
		if (atomic_load(&srv->receiving) < MIN_RECEIVING)
			add_work(srv);
		if (!request_admit(srv, pipe)) {
			/* A client over its bound gets no answer, and nobody else's request waits
			 * for it. Its connection is left open: closing a pipe whose replies are
			 * stuck in a full socket buffer (a client that does not read) can wedge
			 * nng 1.5.2's reaper for good; the connection ends when its client goes. */
			nng_msg_free(msg);
			work_recv(w);
			return;
		}
		w->pipe_id = (uint32_t)nng_pipe_id(pipe);
		/* WAIT before dispatch: once parked, the waker may answer (and this aio complete
		 * again on another thread) before this callback returns. */
		w->state = WORK_WAIT;
		atomic_fetch_add(&srv->busy, 1);
		rv = mb_dispatch_park(srv->broker, (uint32_t)nng_pipe_id(pipe), nng_msg_body(msg),
				      nng_msg_len(msg), &msg, &w->park);
		if (rv == MB_DISPATCH_NO_SESSION) {
			if (open_session(srv, pipe) == 0)
				rv = mb_dispatch_park(srv->broker, (uint32_t)nng_pipe_id(pipe),
						      nng_msg_body(msg), nng_msg_len(msg), &msg,
						      &w->park);
			if (rv == MB_DISPATCH_NO_SESSION) {
				nng_msg_free(msg);
				request_done(w);
				work_recv(w);
				return;
			}
		}
		if (rv == MB_DISPATCH_PARKED) {
			/* w belongs to the waker now: touch only locals. */
			nng_msg_free(msg);
			return;
		}
		if (rv == MB_DISPATCH_DROP) {
			/* Not a request we can answer: drop the connection, which ends its
			 * session and returns everything it held. */
			mb_log(LOG_NOTICE, "pipe %d sent a malformed request; closing it",
			       nng_pipe_id(pipe));
			nng_msg_free(msg);
			close_later(srv, (uint32_t)nng_pipe_id(pipe));
			request_done(w);
			work_recv(w);
			return;
		}
		work_send(w, msg);
		return;
	case WORK_WAIT:
		/* No nng operation is pending while parked (the waker answers): not reached. */
		return;
	case WORK_SEND:
		request_done(w);
		if (rv != 0) {
			msg = nng_aio_get_msg(w->aio);
			if (msg != NULL) {
				pipe = nng_msg_get_pipe(msg);
				nng_msg_free(msg);
				if (rv == NNG_ETIMEDOUT && nng_pipe_id(pipe) > 0)
					mb_log_limited(&unread, LOG_NOTICE,
						       "pipe %d did not read its reply in %d ms; "
						       "the reply is dropped",
						       nng_pipe_id(pipe), SEND_TIMEOUT_MS);
			}
			if (rv == NNG_ECLOSED)
				return;
		}
		work_recv(w);
		return;
	}
}

/* Adds one context state machine and starts it receiving. 0 or an nng error. */
static int add_work(mb_server *srv)
{
	work *w;
	int rv;

	pthread_mutex_lock(&srv->lock);
	if (srv->nworks >= MAX_WORKS) {
		pthread_mutex_unlock(&srv->lock);
		return NNG_ENOMEM;
	}
	w = calloc(1, sizeof(*w));
	if (w == NULL) {
		pthread_mutex_unlock(&srv->lock);
		return NNG_ENOMEM;
	}
	w->srv = srv;
	w->park.arm = park_arm;
	w->park.wake = park_wake;
	w->park.owner = w;
	if ((rv = nng_aio_alloc(&w->aio, work_cb, w)) != 0 ||
	    (rv = nng_ctx_open(&w->ctx, srv->sock)) != 0) {
		if (w->aio != NULL)
			nng_aio_free(w->aio);
		free(w);
		pthread_mutex_unlock(&srv->lock);
		return rv;
	}
	w->next = srv->works;
	srv->works = w;
	srv->nworks++;
	pthread_mutex_unlock(&srv->lock);
	work_recv(w);
	return 0;
}

/* Creates the session of a new connection from its peer credentials. 0, or -1 (pipe closed). */
static int open_session(mb_server *srv, nng_pipe p)
{
	pid_t pid;
	uid_t uid;
	gid_t gid;
	int rv;

	if (mb_pipe_peer(p, &pid, &uid, &gid) != 0) {
		mb_log(LOG_WARNING, "pipe %d: no peer credentials; closing it", nng_pipe_id(p));
		close_later(srv, (uint32_t)nng_pipe_id(p));
		return -1;
	}
	rv = mb_broker_connect(srv->broker, (uint32_t)nng_pipe_id(p), pid, uid, gid);
	if (rv == -ENOTCONN)
		return -1; /* the pipe ended already */
	if (rv != 0 && rv != -EEXIST) {
		close_later(srv, (uint32_t)nng_pipe_id(p));
		return -1;
	}
	return 0;
}

static void pipe_cb(nng_pipe p, nng_pipe_ev ev, void *arg)
{
	mb_server *srv = arg;

	if (ev == NNG_PIPE_EV_ADD_POST) {
		open_session(srv, p);
	} else if (ev == NNG_PIPE_EV_REM_POST) {
		mb_broker_disconnect(srv->broker, (uint32_t)nng_pipe_id(p));
	}
}

static int listen_on(mb_server *srv)
{
	nng_listener l;
	int rv;

	if ((rv = nng_listener_create(&l, srv->sock, srv->url)) != 0)
		return rv;
	if (mb_address_ipc_path(srv->url) != NULL &&
	    (rv = nng_listener_set_int(l, NNG_OPT_IPC_PERMISSIONS, srv->mode)) != 0) {
		nng_listener_close(l);
		return rv;
	}
	if ((rv = nng_listener_start(l, 0)) != 0) {
		nng_listener_close(l);
		return rv;
	}
	if (srv->gid != (gid_t)-1 && mb_address_ipc_path(srv->url) != NULL &&
	    chown(mb_address_ipc_path(srv->url), (uid_t)-1, srv->gid) != 0) {
		mb_log(LOG_ERR, "cannot give %s to group %u: %s", mb_address_ipc_path(srv->url),
		       (unsigned)srv->gid, strerror(errno));
		nng_listener_close(l);
		return NNG_EPERM;
	}
	srv->listener = l;
	return 0;
}

int mb_server_start(mb_broker *b, const char *url, int contexts, int mode, gid_t gid,
		    mb_server **out)
{
	mb_server *srv = calloc(1, sizeof(*srv));
	int rv;

	if (srv == NULL)
		return NNG_ENOMEM;
	srv->broker = b;
	srv->mode = mode;
	srv->gid = gid;
	pthread_mutex_init(&srv->lock, NULL);
	pthread_mutex_init(&srv->waker_lock, NULL);
	if ((srv->inflight = mb_inflight_new()) == NULL) {
		free(srv);
		return NNG_ENOMEM;
	}
	pthread_condattr_t ca;
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&srv->waker_cv, &ca);
	pthread_condattr_destroy(&ca);
	if (pthread_create(&srv->waker, NULL, waker_main, srv) != 0) {
		mb_inflight_free(srv->inflight);
		free(srv);
		return NNG_ENOMEM;
	}
	srv->waker_started = true;
	if ((rv = nng_rep0_open(&srv->sock)) != 0) {
		mb_server_stop(srv);
		return rv;
	}
	snprintf(srv->url, sizeof(srv->url), "%s", url);
	/* Before the listener exists, so no connection ever sees an unlimited size. */
	if ((rv = nng_socket_set_size(srv->sock, NNG_OPT_RECVMAXSZ, MB_WIRE_MAX_MESSAGE)) != 0 ||
	    (rv = nng_pipe_notify(srv->sock, NNG_PIPE_EV_ADD_POST, pipe_cb, srv)) != 0 ||
	    (rv = nng_pipe_notify(srv->sock, NNG_PIPE_EV_REM_POST, pipe_cb, srv)) != 0 ||
	    (rv = listen_on(srv)) != 0)
		goto fail;
	pthread_mutex_lock(&b->lock);
	b->close_pipe = close_pipe;
	b->close_pipe_arg = srv;
	pthread_mutex_unlock(&b->lock);
	for (int i = 0; i < contexts; i++)
		if ((rv = add_work(srv)) != 0)
			goto fail;
	*out = srv;
	return 0;
fail:
	mb_server_stop(srv);
	return rv;
}

int mb_server_busy(mb_server *srv)
{
	return atomic_load(&srv->busy);
}

void mb_server_stop(mb_server *srv)
{
	work *w;

	if (srv == NULL)
		return;
	pthread_mutex_lock(&srv->broker->lock);
	srv->broker->close_pipe = NULL;
	pthread_mutex_unlock(&srv->broker->lock);
	if (srv->waker_started) {
		pthread_mutex_lock(&srv->waker_lock);
		srv->waker_stop = true;
		pthread_cond_signal(&srv->waker_cv);
		pthread_mutex_unlock(&srv->waker_lock);
		pthread_join(srv->waker, NULL);
	}
	/* Order matters (nng #1543): stop the state machines, close the socket, then free. */
	for (w = srv->works; w != NULL; w = w->next)
		nng_aio_stop(w->aio);
	nng_close(srv->sock);
	while ((w = srv->works) != NULL) {
		srv->works = w->next;
		nng_aio_free(w->aio);
		free(w);
	}
	mb_inflight_free(srv->inflight);
	pthread_mutex_destroy(&srv->lock);
	free(srv->closing);
	pthread_mutex_destroy(&srv->waker_lock);
	pthread_cond_destroy(&srv->waker_cv);
	free(srv);
}
