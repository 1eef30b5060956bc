/*
 * connection.c: the life of a client's connection: connect and Hello, the section handed over,
 * nng's pipe events, reconnection (re-attach to the section the broker kept, or the section handed
 * back to a new broker with re-registration of every reservation and commit), fork detection, the
 * process's list of clients, Goodbye and teardown. Requests themselves go through transport.c.
 */
#include <endian.h>
#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <nng/nng.h>
#include <nng/protocol/reqrep0/req.h>

#include "client_internal.h"
#include "mb_address.h"
#include "mb_extent.h"
#include "mb_fdpass.h"
#include "pages.h"

atomic_uint mb_fork_generation;

static pthread_once_t atfork_once = PTHREAD_ONCE_INIT;
static pthread_mutex_t clients_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_mutex_t events_lock = PTHREAD_MUTEX_INITIALIZER; /* guards event_clients */
static mb_client *event_clients;
static mb_client *clients;

static void on_fork_child(void)
{
	atomic_fetch_add(&mb_fork_generation, 1);
	/* The parent's threads do not exist here; a lock held by one of them would never be
	 * released, so the child starts with fresh ones. */
	pthread_mutex_init(&clients_lock, NULL);
	pthread_mutex_init(&events_lock, NULL);
}

static void install_atfork(void)
{
	pthread_atfork(NULL, NULL, on_fork_child);
}

static HRESULT reconnect(mb_client *c);
static void goodbye(mb_client *c);

HRESULT mb_client_usable_or_reconnect(mb_client *client)
{
	mb_client_clear_error();
	if (client == NULL)
		return mb_client_error(E_INVALIDARG, "client is NULL");
	if (client->fork_generation != atomic_load(&mb_fork_generation))
		return mb_client_error(HOST_E_CLRNOTAVAILABLE,
				       "this client belongs to the parent of a forked process");
	if (atomic_load(&client->disabled))
		return mb_client_error(HOST_E_CLRNOTAVAILABLE,
				       "the client was disabled by an earlier E_FAIL");
	if (atomic_load(&client->lost))
		return reconnect(client);
	return S_OK;
}

/*
 * Connects to the fd socket with (session_id, token). adopt < 0: receives the session's section and
 * returns it. adopt >= 0: gives that section (mapped under a previous broker) to the broker and
 * returns adopt. -errno on failure.
 */
static int fetch_section(const char *url, uint64_t session_id, const uint8_t *token, int adopt)
{
	struct sockaddr_un sun;
	socklen_t len;
	struct timeval tv = {.tv_sec = mb_client_timeout_ms() / 1000,
			     .tv_usec = (mb_client_timeout_ms() % 1000) * 1000};
	uint8_t req[8 + MB_WIRE_TOKEN_LEN + 1];
	uint8_t status = 1;
	uint64_t id = htole64(session_id);
	int sock, fd = -1;
	ssize_t n;

	if (mb_address_fd_socket(url, &sun, &len) != 0)
		return -EINVAL;
	sock = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
	if (sock < 0)
		return -errno;
	setsockopt(sock, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	setsockopt(sock, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
	if (connect(sock, (struct sockaddr *)&sun, len) != 0) {
		int err = errno;
		close(sock);
		return -err;
	}
	memcpy(req, &id, 8);
	memcpy(req + 8, token, MB_WIRE_TOKEN_LEN);
	req[8 + MB_WIRE_TOKEN_LEN] = adopt >= 0 ? 1 : 0; /* MB_FD_ADOPT : MB_FD_GET */
	if (mb_fdpass_send(sock, req, sizeof(req), adopt) != 0) {
		close(sock);
		return -EIO;
	}
	n = mb_fdpass_recv(sock, &status, 1, &fd);
	close(sock);
	if (adopt >= 0) {
		if (fd >= 0)
			close(fd);
		return n == 1 && status == 0 ? adopt : -EPERM;
	}
	if (n != 1 || status != 0 || fd < 0) {
		if (fd >= 0)
			close(fd);
		return -EPERM;
	}
	return fd;
}

static void client_free(mb_client *c)
{
	mb_client_slots_free(c);
	mb_regmap_clear(&c->map, NULL, NULL);
	pthread_rwlock_destroy(&c->map_lock);
	pthread_mutex_destroy(&c->slot_lock);
	pthread_mutex_destroy(&c->sync_lock);
	pthread_mutex_destroy(&c->notify_lock);
	pthread_mutex_destroy(&c->hook_lock);
	pthread_cond_destroy(&c->notify_done);
	pthread_mutex_destroy(&c->reconnect_lock);
	free(c);
}

/* How a Hello asks for a section. */
enum hello_kind {
	HELLO_NEW,	/* the first connect: a new section, handed over */
	HELLO_RESUME,	/* after a drop: ours back with the attach token, else ours handed back */
	HELLO_HAND_BACK /* ours handed back (the broker's books of it may differ from ours) */
};

/*
 * Hello, then the section: a new one (first connect); or, after a dropped connection, the section
 * the broker kept for us re-attached (*resumed, nothing else to do), else ours handed back to a new
 * session (a restarted broker), which the caller registers again.
 */
static HRESULT hello(mb_client *c, enum hello_kind kind, bool *resumed)
{
	Membroker__V1__Request req = MEMBROKER__V1__REQUEST__INIT;
	Membroker__V1__Hello h = MEMBROKER__V1__HELLO__INIT;
	mb_response *resp;
	HRESULT hr;
	bool adopt = kind != HELLO_NEW;

	*resumed = false;
	h.protocol_version = MB_PROTOCOL_VERSION;
	h.name = c->name;
	h.pid = (uint32_t)getpid();
	if (kind == HELLO_RESUME && c->have_attach) {
		h.resume_session = c->session_id;
		h.resume_token.data = c->attach_token;
		h.resume_token.len = sizeof(c->attach_token);
	}
	/* A token is good for one attach; a Hello whose reply is lost may have used it. */
	bool had_attach = c->have_attach;
	c->have_attach = false;
	req.body_case = MEMBROKER__V1__REQUEST__BODY_HELLO;
	req.hello = &h;
	uint32_t pipe_id = 0;
	hr = mb_client_call_via(c, &req, &resp, &pipe_id);
	if (hr != S_OK)
		return hr;
	/* The session lives on this connection: only its loss means connecting again (a late
	 * event about an older connection must not). */
	atomic_store(&c->session_pipe, pipe_id);
	/* A loss reported before this point was of an older connection (session_pipe was not
	 * known yet), not of the one the session now lives on. */
	atomic_store(&c->lost, false);
	hr = (HRESULT)resp->hresult;
	if (hr != S_OK) {
		/* A refusal burns nothing: the token still works, for this broker later or for
		 * the next one (a broker that is restarting refuses every request and hands its
		 * sections to its successor). */
		c->have_attach = had_attach;
		mb_client_error(HOST_E_CLRNOTAVAILABLE, "the broker refused this client: %s",
				resp->detail);
		hr = HOST_E_CLRNOTAVAILABLE;
	} else if (resp->body_case != MEMBROKER__V1__RESPONSE__BODY_HELLO ||
		   resp->hello->protocol_version != MB_PROTOCOL_VERSION ||
		   (!resp->hello->resumed && resp->hello->fd_token.len != MB_WIRE_TOKEN_LEN) ||
		   (resp->hello->resumed &&
		    (h.resume_session == 0 || resp->hello->session_id != c->session_id))) {
		hr = mb_client_error(HOST_E_CLRNOTAVAILABLE, "the broker answered hello with %s",
				     "a malformed reply");
	} else {
		if (resp->hello->attach_token.len == MB_WIRE_TOKEN_LEN) {
			memcpy(c->attach_token, resp->hello->attach_token.data,
			       sizeof(c->attach_token));
			c->have_attach = true;
		}
		c->budget = resp->hello->budget;
		*resumed = resp->hello->resumed;
	}
	if (hr != S_OK || *resumed) {
		mb_wire_free_response(resp);
		return hr;
	}
	c->session_id = resp->hello->session_id;
	if (adopt && resp->hello->section_size != c->section_size) {
		hr = mb_client_error(HOST_E_CLRNOTAVAILABLE,
				     "the new broker's sections have another size");
	} else if (adopt) {
		int rv = fetch_section(c->address, c->session_id, resp->hello->fd_token.data,
				       c->section_fd);
		if (rv < 0)
			hr = mb_client_error(HOST_E_CLRNOTAVAILABLE,
					     "the broker did not take our section back: %s",
					     strerror(-rv));
	} else {
		c->section_size = resp->hello->section_size;
		c->section_fd =
		    fetch_section(c->address, c->session_id, resp->hello->fd_token.data, -1);
		if (c->section_fd < 0)
			hr = mb_client_error(HOST_E_CLRNOTAVAILABLE,
					     "cannot receive the section from the broker: %s",
					     strerror(-c->section_fd));
		else {
			mb_vaspace_init(&c->va, c->section_fd, c->section_size);
			mb_credit_attach(c);
		}
	}
	mb_wire_free_response(resp);
	return hr;
}

/*
 * Which client a socket's pipe events belong to. nng may deliver an event for a socket while or
 * just after it is closed; the callback therefore finds its client here, under this lock, and a
 * client leaves the table before its socket closes, so no event ever touches freed memory.
 */

static void events_register(mb_client *c)
{
	pthread_mutex_lock(&events_lock);
	c->next_event = event_clients;
	event_clients = c;
	pthread_mutex_unlock(&events_lock);
}

static void events_unregister(mb_client *c)
{
	pthread_mutex_lock(&events_lock);
	for (mb_client **p = &event_clients; *p != NULL; p = &(*p)->next_event)
		if (*p == c) {
			*p = c->next_event;
			break;
		}
	pthread_mutex_unlock(&events_lock);
}

/* The last step of every ending, failed connect or disconnect: the credit page, the section and
 * the socket go, then the record. The caller has stopped every thread that could use them. */
static void close_and_free(mb_client *c)
{
	mb_credit_detach(c);
	if (c->section_fd >= 0)
		close(c->section_fd);
	events_unregister(c);
	nng_close(c->sock);
	client_free(c);
}

/* nng's view of the connection: it redials by itself after a loss, so a loss is only a reason
 * to say Hello again, which the next call does. */
static void pipe_event(nng_pipe p, nng_pipe_ev ev, void *arg)
{
	uint32_t sock_id = (uint32_t)(uintptr_t)arg;

	pthread_mutex_lock(&events_lock);
	for (mb_client *c = event_clients; c != NULL; c = c->next_event) {
		if ((uint32_t)nng_socket_id(c->sock) != sock_id)
			continue;
		if (ev == NNG_PIPE_EV_ADD_POST) {
			atomic_fetch_add(&c->pipes, 1);
		} else {
			atomic_fetch_sub(&c->pipes, 1);
			uint32_t sp = atomic_load(&c->session_pipe);
			if (sp == 0 || sp == (uint32_t)nng_pipe_id(p))
				atomic_store(&c->lost, true);
		}
		break;
	}
	pthread_mutex_unlock(&events_lock);
}

/* Ranges of the section while this client re-registers it: those the broker refused, and those
 * left to claim (with their level). */
typedef struct range_list {
	struct range {
		uint64_t address, size;
		int level;
	} * v;
	size_t n, cap;
	bool failed; /* an entry could not be kept: the re-registration must start over */
} range_list;

static void range_add(range_list *l, uint64_t address, uint64_t size, int level)
{
	if (l->n > 0 && l->v[l->n - 1].address + l->v[l->n - 1].size == address &&
	    l->v[l->n - 1].level == level) {
		l->v[l->n - 1].size += size;
		return;
	}
	if (l->n == l->cap) {
		size_t cap = l->cap ? 2 * l->cap : 16;
		struct range *v = realloc(l->v, cap * sizeof(*v));
		if (v == NULL) {
			l->failed = true;
			return;
		}
		l->v = v;
		l->cap = cap;
	}
	l->v[l->n].address = address;
	l->v[l->n].size = size;
	l->v[l->n++].level = level;
}

static void refused_add(range_list *l, uint64_t address, uint64_t size)
{
	range_add(l, address, size, 0);
}

/*
 * The refused ranges are decommitted here as the broker did there: closed (PROT_NONE) and marked
 * decommitted in the map. Their contents are gone (the broker punched them); the runtime sees
 * them as reserved, not committed (VirtualQuery: MEM_RESERVE), and a touch faults like any
 * decommitted page. Pages released or decommitted meanwhile are skipped.
 */
static void refused_apply(mb_client *c, range_list *l)
{
	pthread_rwlock_wrlock(&c->map_lock);
	for (size_t i = 0; i < l->n; i++) {
		uint64_t a = l->v[i].address, end = a + l->v[i].size;
		while (a < end) {
			mb_region *r = mb_regmap_find(&c->map, (uintptr_t)a);
			if (r == NULL)
				break;
			uint64_t rend = r->base + r->size < end ? r->base + r->size : end;
			mb_page_range pr = {r, (uintptr_t)a, mb_region_page(r, (uintptr_t)a),
					    (size_t)((rend - a) / MB_PAGE_SIZE)};
			mb_pages_close(c, &pr, false);
			a = rend;
		}
	}
	pthread_rwlock_unlock(&c->map_lock);
	free(l->v);
}

/* AdoptDone, and again while the broker has more refused ranges to tell. */
static HRESULT adopt_done(mb_client *c, range_list *l)
{
	Membroker__V1__Request req = MEMBROKER__V1__REQUEST__INIT;
	Membroker__V1__AdoptDone done = MEMBROKER__V1__ADOPT_DONE__INIT;
	bool more = true;
	HRESULT hr = S_OK;

	req.body_case = MEMBROKER__V1__REQUEST__BODY_ADOPT_DONE;
	req.adopt_done = &done;
	for (unsigned rounds = 0; more && hr == S_OK && rounds < 1000000; rounds++) {
		mb_response *resp;
		hr = mb_client_call(c, &req, &resp);
		if (hr != S_OK)
			break;
		hr = (HRESULT)resp->hresult;
		more = false;
		if (hr != S_OK)
			mb_client_error(hr, "%s", resp->detail);
		else if (resp->body_case == MEMBROKER__V1__RESPONSE__BODY_ADOPT_DONE) {
			const Membroker__V1__AdoptDoneReply *a = resp->adopt_done;
			for (size_t i = 0; i < a->n_refused; i++)
				refused_add(l, a->refused[i]->address, a->refused[i]->size);
			more = a->more && a->n_refused > 0;
		}
		mb_wire_free_response(resp);
	}
	return hr;
}

/* One claim (Commit.adopt) of [address, address+size) at level; what the broker refused of it goes
 * to l. S_OK, or the error that ends the re-registration. */
static HRESULT claim(mb_client *c, uint64_t address, uint64_t size, int level, range_list *l)
{
	Membroker__V1__Request req = MEMBROKER__V1__REQUEST__INIT;
	Membroker__V1__Commit com = MEMBROKER__V1__COMMIT__INIT;
	mb_response *resp;
	HRESULT hr;

	com.address = address;
	com.size = size;
	com.level = (uint32_t)level;
	com.adopt = true;
	req.body_case = MEMBROKER__V1__REQUEST__BODY_COMMIT;
	req.commit = &com;
	hr = mb_client_call(c, &req, &resp);
	if (hr != S_OK)
		return hr;
	hr = (HRESULT)resp->hresult;
	if (hr == E_OUTOFMEMORY) {
		/* Past what this client may ever hold: refused whole, and punched. */
		refused_add(l, address, size);
		hr = S_OK;
	} else if (hr != S_OK) {
		mb_client_error(hr, "%s", resp->detail);
	} else if (resp->body_case == MEMBROKER__V1__RESPONSE__BODY_ADOPT_DONE) {
		/* Claimed in part: the rest is refused. */
		for (size_t i = 0; i < resp->adopt_done->n_refused; i++)
			refused_add(l, resp->adopt_done->refused[i]->address,
				    resp->adopt_done->refused[i]->size);
	}
	mb_wire_free_response(resp);
	return hr;
}

/*
 * Claims every committed run of the map, each at the level its pages were committed at: first the
 * parts of it the section holds data in (mb_extent.h), then the others. The runs are split once:
 * pages an application thread writes meanwhile are claimed all the same, in the second round.
 */
static HRESULT claim_runs(mb_client *c, range_list *refused)
{
	const uint8_t run_mask = MB_PAGE_COMMITTED | MB_PAGE_LEVEL_MASK;
	range_list holes = {0};
	unsigned seeks = UINT_MAX;
	HRESULT hr = S_OK;

	for (mb_region *r = mb_regmap_first(&c->map); r != NULL && hr == S_OK;
	     r = mb_regmap_next(&c->map, r)) {
		size_t pages = r->size / MB_PAGE_SIZE;
		for (size_t i = mb_region_find(r, 0, pages, MB_PAGE_COMMITTED, MB_PAGE_COMMITTED);
		     i < pages && hr == S_OK;
		     i = mb_region_find(r, i, pages, MB_PAGE_COMMITTED, MB_PAGE_COMMITTED)) {
			uint8_t st = mb_region_state(r, i) & run_mask;
			size_t j = mb_region_run_end(r, i, pages, run_mask, st);
			uint64_t a = r->base + i * MB_PAGE_SIZE, e = r->base + j * MB_PAGE_SIZE;
			while (a < e && hr == S_OK) {
				uint64_t ds, de;
				mb_extent_data(c->section_fd, a, e, MB_EXTENT_GAP, &seeks, &ds,
					       &de);
				if (ds > a)
					range_add(&holes, a, ds - a, mb_page_level(st));
				if (de > ds)
					hr = claim(c, ds, de - ds, mb_page_level(st), refused);
				a = de;
			}
			i = j;
		}
	}
	if (holes.failed)
		hr = mb_client_error(E_OUTOFMEMORY, "no memory to re-register the section");
	for (size_t k = 0; k < holes.n && hr == S_OK; k++)
		hr = claim(c, holes.v[k].address, holes.v[k].size, holes.v[k].level, refused);
	free(holes.v);
	return hr;
}

/*
 * Tells the new session about every reservation and every committed run this client holds, each
 * run at the level its pages were committed at (the map keeps it per page): first the parts the
 * section holds data in, then the others, so that a claim past what this client may hold is cut
 * where nothing is lost. Then AdoptDone, which books them (pages the section holds first, then
 * the others; daemon/readopt.h). What the broker refuses it has punched out: those pages are
 * decommitted here too (refused_apply).
 */
static HRESULT readopt(mb_client *c)
{
	Membroker__V1__Request req = MEMBROKER__V1__REQUEST__INIT;
	Membroker__V1__Reserve res = MEMBROKER__V1__RESERVE__INIT;
	range_list refused = {0};
	HRESULT hr = S_OK;

	pthread_rwlock_rdlock(&c->map_lock);
	for (mb_region *r = mb_regmap_first(&c->map); r != NULL && hr == S_OK;
	     r = mb_regmap_next(&c->map, r)) {
		res.address = r->base;
		res.size = r->size;
		req.body_case = MEMBROKER__V1__REQUEST__BODY_RESERVE;
		req.reserve = &res;
		hr = mb_client_call_simple(c, &req);
	}
	if (hr == S_OK)
		hr = claim_runs(c, &refused);
	pthread_rwlock_unlock(&c->map_lock);
	if (hr == S_OK)
		hr = adopt_done(c, &refused);
	/* A refusal this client could not record leaves its map wrong: it starts over (the next
	 * call hands the section back again). */
	if (hr == S_OK && refused.failed)
		hr = mb_client_error(E_OUTOFMEMORY, "no memory to re-register the section");
	/* Punched by the broker whatever happens next: never left open as committed here. */
	refused_apply(c, &refused);
	return hr;
}

/*
 * After a lost connection: once nng has a connection again, a new Hello. A broker that lived on
 * kept our section with its books: the client re-attaches and carries on, nothing re-sent. A
 * restarted broker (or one whose books may differ from ours: a request that changed them lost its
 * reply) gets our section handed back and every reservation and commit registered again. Until a
 * connection is back, calls fail at once with HOST_E_CLRNOTAVAILABLE.
 */
static HRESULT reconnect(mb_client *c)
{
	HRESULT hr = S_OK;
	bool resumed = false;

	pthread_mutex_lock(&c->reconnect_lock);
	if (!atomic_load(&c->lost))
		goto out; /* another thread did it */
	if (atomic_load(&c->pipes) <= 0) {
		hr = mb_client_error(HOST_E_CLRNOTAVAILABLE,
				     "the broker at %s is unreachable (reconnecting)", c->address);
		goto out;
	}
	atomic_store(&c->lost, false);
	hr = hello(c, atomic_load(&c->unsure) ? HELLO_HAND_BACK : HELLO_RESUME, &resumed);
	if (hr == S_OK && !resumed) {
		/* The new session has no record of local commits: re-registration covers them. */
		mb_credit_reset(c);
		hr = readopt(c);
		if (hr != S_OK) {
			/* Half registered: the books of this section cannot be trusted. The next
			 * call hands the section back again, on a new connection (a second Hello on
			 * this one would be refused); the half-registered record ends then. */
			atomic_store(&c->unsure, true);
			nng_pipe p = NNG_PIPE_INITIALIZER;
			p.id = atomic_load(&c->session_pipe);
			if (p.id != 0)
				nng_pipe_close(p);
		}
	}
	if (hr != S_OK) {
		atomic_store(&c->lost, true);
		hr = HOST_E_CLRNOTAVAILABLE;
		goto out;
	}
	atomic_store(&c->unsure, false);
	c->reconnects++;
	if (resumed)
		c->reattaches++;
out:
	pthread_mutex_unlock(&c->reconnect_lock);
	return hr;
}

bool mb_client_reconnect_after_drop(mb_client *c)
{
	/* nng redials within its reconnect interval (100 ms); give it a little longer. */
	for (int waited = 0; atomic_load(&c->pipes) <= 0 && waited < 2000; waited += 10)
		usleep(10000);
	return atomic_load(&c->lost) && !atomic_load(&c->disabled) && reconnect(c) == S_OK;
}

HRESULT mb_connect_named(const char *address, const char *name, mb_client **client)
{
	mb_client *c;
	HRESULT hr;
	int rv;

	pthread_once(&atfork_once, install_atfork);
	mb_client_clear_error();
	if (client == NULL)
		return mb_client_error(E_POINTER, "client out-pointer is NULL");
	*client = NULL;
	/* nng was started before this process forked (our atfork handler is installed with it)
	 * and aborts if used again here. */
	if (atomic_load(&mb_fork_generation) != 0)
		return mb_client_error(HOST_E_CLRNOTAVAILABLE,
				       "cannot connect from a forked child of a process that used "
				       "membroker (nng is not fork-safe); exec first");
	c = calloc(1, sizeof(*c));
	if (c == NULL)
		return mb_client_error(E_OUTOFMEMORY, "no memory for the client");
	if (mb_address_resolve(address, c->address, sizeof(c->address)) != 0) {
		free(c);
		return mb_client_error(E_INVALIDARG, "'%s' is not an ipc:// or abstract:// address",
				       address ? address : getenv(MB_ADDRESS_ENV));
	}
	snprintf(c->name, sizeof(c->name), "%s", name ? name : "");
	c->section_fd = -1;
	c->fork_generation = atomic_load(&mb_fork_generation);
	atomic_init(&c->next_request_id, 1);
	atomic_init(&c->refs, 1);
	pthread_rwlock_init(&c->map_lock, NULL);
	pthread_mutex_init(&c->slot_lock, NULL);
	pthread_mutex_init(&c->sync_lock, NULL);
	pthread_mutex_init(&c->notify_lock, NULL);
	pthread_mutex_init(&c->hook_lock, NULL);
	pthread_cond_init(&c->notify_done, NULL);
	mb_regmap_init(&c->map, true);

	pthread_mutex_init(&c->reconnect_lock, NULL);
	if ((rv = nng_req0_open(&c->sock)) != 0) {
		client_free(c);
		return mb_client_error(HOST_E_CLRNOTAVAILABLE, "cannot open a socket: %s",
				       nng_strerror(rv));
	}
	events_register(c);
	void *sock_key = (void *)(uintptr_t)(uint32_t)nng_socket_id(c->sock);
	nng_pipe_notify(c->sock, NNG_PIPE_EV_ADD_POST, pipe_event, sock_key);
	nng_pipe_notify(c->sock, NNG_PIPE_EV_REM_POST, pipe_event, sock_key);
	/* Requests are not idempotent (a commit charges the budget): never resend one. */
	nng_socket_set_ms(c->sock, NNG_OPT_REQ_RESENDTIME, NNG_DURATION_INFINITE);
	nng_socket_set_size(c->sock, NNG_OPT_RECVMAXSZ, MB_WIRE_MAX_MESSAGE);
	/* A blocking dial fails at once when nobody listens, rather than retrying forever. */
	rv = mb_wire_dial(c->sock, c->address, mb_client_timeout_ms());
	if (rv != 0) {
		mb_client_error(HOST_E_CLRNOTAVAILABLE, "no broker at %s: %s", c->address,
				nng_strerror(rv));
		events_unregister(c);
		nng_close(c->sock);
		client_free(c);
		return HOST_E_CLRNOTAVAILABLE;
	}
	bool resumed;
	hr = hello(c, HELLO_NEW, &resumed);
	/* The connection may drop under a first Hello (a broker restarting its listener); nng
	 * redials by itself, so a few more tries while it comes back. */
	for (int attempt = 0; attempt < 3 && hr != S_OK && atomic_load(&c->lost); attempt++) {
		for (int waited = 0; atomic_load(&c->pipes) <= 0 && waited < 5000; waited += 10)
			usleep(10000);
		atomic_store(&c->lost, false);
		hr = hello(c, HELLO_NEW, &resumed);
	}
	if (hr != S_OK) {
		char why[MB_CLIENT_ERROR_MAX];
		snprintf(why, sizeof(why), "%s", mb_last_error());
		if (c->session_id != 0 && !atomic_load(&c->lost))
			goodbye(c); /* a section was made for us: no need to keep it */
		close_and_free(c);
		mb_client_error(hr, "%s", why);
		return hr;
	}
	pthread_mutex_lock(&clients_lock);
	c->next_client = clients;
	clients = c;
	pthread_mutex_unlock(&clients_lock);
	*client = c;
	return S_OK;
}

HRESULT mb_connect(const char *address, mb_client **client)
{
	return mb_connect_named(address, NULL, client);
}

bool mb_client_other_owner(const mb_client *client, uintptr_t addr)
{
	bool found = false;

	pthread_mutex_lock(&clients_lock);
	for (mb_client *o = clients; o != NULL && !found; o = o->next_client) {
		if (o == client || o->fork_generation != client->fork_generation)
			continue;
		pthread_rwlock_rdlock(&o->map_lock);
		found = mb_regmap_find(&o->map, addr) != NULL;
		pthread_rwlock_unlock(&o->map_lock);
	}
	pthread_mutex_unlock(&clients_lock);
	return found;
}

void mb_client_ref(mb_client *client)
{
	atomic_fetch_add(&client->refs, 1);
}

/*
 * Tells the broker the client is done, so it frees the section now: a connection that merely
 * closes leaves the section detached (and charged) for a re-attach until this process exits. A
 * client whose connection is lost re-attaches first. Best effort: a broker that cannot be reached
 * frees the section when the process exits.
 */
static void goodbye(mb_client *c)
{
	Membroker__V1__Request req = MEMBROKER__V1__REQUEST__INIT;
	Membroker__V1__Goodbye g = MEMBROKER__V1__GOODBYE__INIT;

	if (atomic_load(&c->disabled) || atomic_load(&c->pipes) <= 0 ||
	    (atomic_load(&c->lost) && reconnect(c) != S_OK))
		return;
	req.body_case = MEMBROKER__V1__REQUEST__BODY_GOODBYE;
	req.goodbye = &g;
	mb_client_call_simple(c, &req);
}

static void teardown(mb_client *c)
{
	bool in_child = c->fork_generation != atomic_load(&mb_fork_generation);

	pthread_mutex_lock(&clients_lock);
	for (mb_client **p = &clients; *p != NULL; p = &(*p)->next_client)
		if (*p == c) {
			*p = c->next_client;
			break;
		}
	pthread_mutex_unlock(&clients_lock);
	if (in_child) {
		/* nng aborts when used after fork, and the child has no mappings of ours
		 * (MADV_DONTFORK): only the bookkeeping and the inherited descriptor go. */
		if (c->section_fd >= 0)
			close(c->section_fd);
		events_unregister(c);
		mb_regmap_clear(&c->map, NULL, NULL);
		free(c);
		return;
	}
	mb_notify_stop(c);
	goodbye(c);
	mb_vm_unmap_all(c);
	close_and_free(c);
}

void mb_client_unref(mb_client *client)
{
	if (atomic_fetch_sub(&client->refs, 1) == 1)
		teardown(client);
}

void mb_disconnect(mb_client *client)
{
	if (client == NULL)
		return;
	if (atomic_exchange(&client->disconnecting, true))
		return; /* disconnected twice: the second call must not drop another reference */
	mb_client_unref(client);
}
