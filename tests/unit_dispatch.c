/*
 * unit_dispatch.c: the broker's request handling (daemon/dispatch.c, daemon/broker.c) driven
 * without sockets: packed requests in, unpacked responses out, on a real mb_broker.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "broker.h"
#include "credit.h"
#include "dispatch.h"
#include "mb_credit.h"
#include "mb_regmap.h"
#include "mb_win32.h"
#include "mb_wire.h"
#include "memfd.h"

#define MIB    (1024ULL * 1024ULL)
#define BUDGET (64 * MIB)
#define PG     ((uint64_t)MB_PAGE_SIZE)
#define GR     ((uint64_t)MB_GRANULARITY)
#define BASE   ((uint64_t)0x10000000)

/* The answer to any request but Hello before Hello: no session here, connect again. */
#define BEFORE_HELLO_HR HOST_E_CLRNOTAVAILABLE

/* What a client could commit now at eTaskCritical: whole pages under the 90% ceiling. */
static uint64_t avail0(uint64_t committed)
{
	uint64_t ceiling = BUDGET * 900 / 1000;

	return committed >= ceiling ? 0 : (ceiling - committed) / PG * PG;
}

/* ---- fixture ---- */

static int setup(void **state)
{
	mb_broker *b = calloc(1, sizeof(*b));

	if (b == NULL || mb_broker_init(b, BUDGET) != 0)
		return -1;
	/* These tests count exact commits: credit granted ahead would be in every total. */
	b->conf.commit_credit = 0;
	*state = b;
	return 0;
}

/* Commit credit per session in the credit tests: small against the budget, so that the 80% limit
 * and revocation are reached with a few commits. */
#define CREDIT MIB

static int setup_credit(void **state)
{
	mb_broker *b = calloc(1, sizeof(*b));

	if (b == NULL || mb_broker_init(b, BUDGET) != 0)
		return -1;
	/* The broker grants credit unless configured otherwise. */
	if (b->conf.commit_credit != MB_DEFAULT_COMMIT_CREDIT || MB_DEFAULT_COMMIT_CREDIT == 0)
		return -1;
	b->conf.commit_credit = CREDIT;
	*state = b;
	return 0;
}

static int teardown(void **state)
{
	mb_broker *b = *state;

	mb_broker_fini(b);
	free(b);
	return 0;
}

/* The broker's invariant, checked after every step. */
static void check_ledger(mb_broker *b)
{
	assert_int_equal(b->books.ledger.committed, mb_broker_sum_sessions(b));
	assert_true(b->books.ledger.committed <= b->books.ledger.budget);
}

static uint64_t next_request_id = 1000;
static char last_detail[MB_WIRE_MAX_DETAIL + 1];

/* Sends req on pipe and returns the decoded response (free with mb_wire_free_response). */
static mb_response *call(mb_broker *b, uint32_t pipe, mb_request *req)
{
	nng_msg *in = NULL, *out = NULL;
	mb_response *resp;

	req->request_id = ++next_request_id;
	assert_int_equal(mb_wire_pack_request(req, &in), 0);
	assert_int_equal(mb_dispatch(b, pipe, nng_msg_body(in), nng_msg_len(in), &out), 0);
	assert_non_null(out);
	resp = mb_wire_unpack_response(nng_msg_body(out), nng_msg_len(out));
	assert_non_null(resp);
	assert_int_equal(resp->request_id, req->request_id);
	snprintf(last_detail, sizeof(last_detail), "%s", resp->detail);
	/* Failures explain themselves; successes carry no detail. */
	if ((HRESULT)resp->hresult == S_OK)
		assert_string_equal(resp->detail, "");
	else
		assert_true(resp->detail[0] != '\0');
	nng_msg_free(in);
	nng_msg_free(out);
	check_ledger(b);
	return resp;
}

static HRESULT call_hr(mb_broker *b, uint32_t pipe, mb_request *req)
{
	mb_response *resp = call(b, pipe, req);
	HRESULT hr = (HRESULT)resp->hresult;

	mb_wire_free_response(resp);
	return hr;
}

static mb_response *hello_v(mb_broker *b, uint32_t pipe, uint32_t version)
{
	mb_request req = MEMBROKER__V1__REQUEST__INIT;
	Membroker__V1__Hello h = MEMBROKER__V1__HELLO__INIT;

	h.protocol_version = version;
	h.name = "unit_dispatch";
	h.pid = (uint32_t)getpid();
	req.body_case = MEMBROKER__V1__REQUEST__BODY_HELLO;
	req.hello = &h;
	return call(b, pipe, &req);
}

/* Connects pipe with this process's credentials and says Hello; returns the session id. */
static uint64_t open_session(mb_broker *b, uint32_t pipe, uint8_t token[MB_WIRE_TOKEN_LEN])
{
	mb_response *r;
	uint64_t id;

	assert_int_equal(mb_broker_connect(b, pipe, getpid(), getuid(), getgid()), 0);
	r = hello_v(b, pipe, MB_PROTOCOL_VERSION);
	assert_int_equal((HRESULT)r->hresult, S_OK);
	assert_int_equal(r->body_case, MEMBROKER__V1__RESPONSE__BODY_HELLO);
	assert_int_equal(r->hello->fd_token.len, MB_WIRE_TOKEN_LEN);
	id = r->hello->session_id;
	if (token != NULL)
		memcpy(token, r->hello->fd_token.data, MB_WIRE_TOKEN_LEN);
	mb_wire_free_response(r);
	return id;
}

/* The client is done (mb_disconnect): Goodbye ends its section, then the connection closes. */
static void goodbye(mb_broker *b, uint32_t pipe)
{
	mb_request req = MEMBROKER__V1__REQUEST__INIT;
	Membroker__V1__Goodbye g = MEMBROKER__V1__GOODBYE__INIT;

	req.body_case = MEMBROKER__V1__REQUEST__BODY_GOODBYE;
	req.goodbye = &g;
	assert_int_equal(call_hr(b, pipe, &req), S_OK);
	mb_broker_disconnect(b, pipe);
}

static HRESULT reserve(mb_broker *b, uint32_t pipe, uint64_t address, uint64_t size)
{
	mb_request req = MEMBROKER__V1__REQUEST__INIT;
	Membroker__V1__Reserve m = MEMBROKER__V1__RESERVE__INIT;

	m.address = address;
	m.size = size;
	req.body_case = MEMBROKER__V1__REQUEST__BODY_RESERVE;
	req.reserve = &m;
	return call_hr(b, pipe, &req);
}

static HRESULT release(mb_broker *b, uint32_t pipe, uint64_t address)
{
	mb_request req = MEMBROKER__V1__REQUEST__INIT;
	Membroker__V1__Release m = MEMBROKER__V1__RELEASE__INIT;

	m.address = address;
	req.body_case = MEMBROKER__V1__REQUEST__BODY_RELEASE;
	req.release = &m;
	return call_hr(b, pipe, &req);
}

static HRESULT commit(mb_broker *b, uint32_t pipe, uint64_t address, uint64_t size, uint32_t level)
{
	mb_request req = MEMBROKER__V1__REQUEST__INIT;
	Membroker__V1__Commit m = MEMBROKER__V1__COMMIT__INIT;

	m.address = address;
	m.size = size;
	m.level = level;
	req.body_case = MEMBROKER__V1__REQUEST__BODY_COMMIT;
	req.commit = &m;
	return call_hr(b, pipe, &req);
}

static HRESULT decommit(mb_broker *b, uint32_t pipe, uint64_t address, uint64_t size)
{
	mb_request req = MEMBROKER__V1__REQUEST__INIT;
	Membroker__V1__Decommit m = MEMBROKER__V1__DECOMMIT__INIT;

	m.address = address;
	m.size = size;
	req.body_case = MEMBROKER__V1__REQUEST__BODY_DECOMMIT;
	req.decommit = &m;
	return call_hr(b, pipe, &req);
}

static HRESULT reset(mb_broker *b, uint32_t pipe, uint64_t address, uint64_t size, bool undo)
{
	mb_request req = MEMBROKER__V1__REQUEST__INIT;
	Membroker__V1__Reset r = MEMBROKER__V1__RESET__INIT;
	Membroker__V1__ResetUndo u = MEMBROKER__V1__RESET_UNDO__INIT;

	if (undo) {
		u.address = address;
		u.size = size;
		req.body_case = MEMBROKER__V1__REQUEST__BODY_RESET_UNDO;
		req.reset_undo = &u;
	} else {
		r.address = address;
		r.size = size;
		req.body_case = MEMBROKER__V1__REQUEST__BODY_RESET;
		req.reset = &r;
	}
	return call_hr(b, pipe, &req);
}

static HRESULT memory_load(mb_broker *b, uint32_t pipe, uint32_t *load, uint64_t *avail)
{
	mb_request req = MEMBROKER__V1__REQUEST__INIT;
	Membroker__V1__MemoryLoad m = MEMBROKER__V1__MEMORY_LOAD__INIT;
	mb_response *r;
	HRESULT hr;

	req.body_case = MEMBROKER__V1__REQUEST__BODY_MEMORY_LOAD;
	req.memory_load = &m;
	r = call(b, pipe, &req);
	hr = (HRESULT)r->hresult;
	if (hr == S_OK) {
		assert_int_equal(r->body_case, MEMBROKER__V1__RESPONSE__BODY_MEMORY_LOAD);
		*load = r->memory_load->memory_load;
		*avail = r->memory_load->available_bytes;
	}
	mb_wire_free_response(r);
	return hr;
}

typedef struct status {
	uint64_t budget, total_committed, committed, reserved, reservations;
	uint64_t credit, total_credit;
	uint32_t sessions;
} status;

static HRESULT session_status(mb_broker *b, uint32_t pipe, status *st)
{
	mb_request req = MEMBROKER__V1__REQUEST__INIT;
	Membroker__V1__SessionStatus m = MEMBROKER__V1__SESSION_STATUS__INIT;
	mb_response *r;
	HRESULT hr;

	req.body_case = MEMBROKER__V1__REQUEST__BODY_SESSION_STATUS;
	req.session_status = &m;
	r = call(b, pipe, &req);
	hr = (HRESULT)r->hresult;
	if (hr == S_OK) {
		assert_int_equal(r->body_case, MEMBROKER__V1__RESPONSE__BODY_SESSION_STATUS);
		st->budget = r->session_status->budget;
		st->total_committed = r->session_status->total_committed;
		st->committed = r->session_status->committed;
		st->reserved = r->session_status->reserved;
		st->reservations = r->session_status->reservations;
		st->sessions = r->session_status->sessions;
		st->credit = r->session_status->credit;
		st->total_credit = r->session_status->total_credit;
	}
	mb_wire_free_response(r);
	return hr;
}

/* A local commit as a client reports it in a Sync. */
typedef struct local_commit {
	uint64_t address, size;
	uint32_t level;
} local_commit;

static void pack_sync(mb_request *req, Membroker__V1__Sync *m, Membroker__V1__LocalCommit *lc,
		      Membroker__V1__LocalCommit **ptrs, const local_commit *e, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		membroker__v1__local_commit__init(&lc[i]);
		lc[i].address = e[i].address;
		lc[i].size = e[i].size;
		lc[i].level = e[i].level;
		ptrs[i] = &lc[i];
	}
	m->n_commits = n;
	m->commits = ptrs;
	req->body_case = MEMBROKER__V1__REQUEST__BODY_SYNC;
	req->sync = m;
}

/* Reports n local commits; *credit (may be NULL) gets the unused credit the reply carries. */
static HRESULT sync_req(mb_broker *b, uint32_t pipe, const local_commit *e, size_t n,
			uint64_t *credit)
{
	mb_request req = MEMBROKER__V1__REQUEST__INIT;
	Membroker__V1__Sync m = MEMBROKER__V1__SYNC__INIT;
	Membroker__V1__LocalCommit lc[MB_WIRE_MAX_SYNC];
	Membroker__V1__LocalCommit *ptrs[MB_WIRE_MAX_SYNC];
	mb_response *r;
	HRESULT hr;

	assert_true(n <= MB_WIRE_MAX_SYNC);
	pack_sync(&req, &m, lc, ptrs, e, n);
	r = call(b, pipe, &req);
	hr = (HRESULT)r->hresult;
	if (hr == S_OK) {
		assert_int_equal(r->body_case, MEMBROKER__V1__RESPONSE__BODY_SYNC);
		if (credit != NULL)
			*credit = r->sync->credit;
	} else {
		assert_int_equal(r->body_case, MEMBROKER__V1__RESPONSE__BODY__NOT_SET);
	}
	mb_wire_free_response(r);
	return hr;
}

static HRESULT sync1(mb_broker *b, uint32_t pipe, uint64_t address, uint64_t size, uint32_t level)
{
	local_commit e = {address, size, level};

	return sync_req(b, pipe, &e, 1, NULL);
}

/* The session behind pipe, as the broker holds it (the tests are single-threaded: no lock). */
static mb_section *sess(mb_broker *b, uint32_t pipe)
{
	mb_section *s = mb_registry_by_pipe(&b->reg, pipe);

	assert_non_null(s);
	return s;
}

/* The client's side of the credit word: what it may still commit by itself. */
static uint64_t word(mb_broker *b, uint32_t pipe)
{
	mb_section *s = sess(b, pipe);

	assert_non_null(s->credit_word);
	return mb_credit_peek(s->credit_word);
}

/* A client committing pages by itself: takes their credit from the word, as libmembroker does. */
static bool take(mb_broker *b, uint32_t pipe, uint64_t bytes)
{
	mb_section *s = sess(b, pipe);

	assert_non_null(s->credit_word);
	return mb_credit_take(s->credit_word, bytes);
}

/* A client writing its own word, which nothing stops it from doing. */
static void forge(mb_broker *b, uint32_t pipe, uint64_t value)
{
	__atomic_store_n(&sess(b, pipe)->credit_word->credit, value, __ATOMIC_RELEASE);
}

/* Applies the broker's configuration with another commit credit (as a reload does). */
static void reload_credit(mb_broker *b, uint64_t credit)
{
	/* mb_config is large (every group's patterns): not for the stack. */
	mb_config *c = malloc(sizeof(*c));

	assert_non_null(c);
	*c = b->conf;
	c->commit_credit = credit;
	mb_broker_apply_config(b, c);
	free(c);
	check_ledger(b);
}

/* ---- Hello ---- */

static void test_request_before_hello(void **state)
{
	mb_broker *b = *state;
	uint32_t load;
	uint64_t avail;
	status st;

	assert_int_equal(mb_broker_connect(b, 1, getpid(), getuid(), getgid()), 0);
	assert_int_equal(reserve(b, 1, BASE, GR), BEFORE_HELLO_HR);
	assert_int_equal(commit(b, 1, BASE, PG, 0), BEFORE_HELLO_HR);
	assert_int_equal(release(b, 1, BASE), BEFORE_HELLO_HR);
	assert_int_equal(memory_load(b, 1, &load, &avail), BEFORE_HELLO_HR);
	assert_int_equal(session_status(b, 1, &st), BEFORE_HELLO_HR);
	assert_int_equal(b->books.ledger.committed, 0);
	/* Hello is still possible afterwards. */
	assert_true(open_session(b, 2, NULL) > 0);
	assert_int_equal(mb_broker_connect(b, 1, getpid(), getuid(), getgid()), -EEXIST);
}

static void test_hello_wrong_version(void **state)
{
	mb_broker *b = *state;
	static const uint32_t versions[] = {0, MB_PROTOCOL_VERSION + 1, 999, UINT32_MAX};
	mb_response *r;

	assert_int_equal(mb_broker_connect(b, 1, getpid(), getuid(), getgid()), 0);
	for (size_t i = 0; i < sizeof(versions) / sizeof(versions[0]); i++) {
		char want[32];

		r = hello_v(b, 1, versions[i]);
		assert_int_equal((HRESULT)r->hresult, HOST_E_CLRNOTAVAILABLE);
		assert_int_equal(r->body_case, MEMBROKER__V1__RESPONSE__BODY__NOT_SET);
		assert_true(strlen(r->detail) > 0);
		snprintf(want, sizeof(want), "%u", versions[i]);
		assert_non_null(strstr(r->detail, want));
		mb_wire_free_response(r);
	}
	/* Refused Hellos grant nothing: the session still has to say Hello. */
	assert_int_equal(reserve(b, 1, BASE, GR), BEFORE_HELLO_HR);
}

static void test_hello_ok(void **state)
{
	mb_broker *b = *state;
	uint8_t t1[MB_WIRE_TOKEN_LEN], t2[MB_WIRE_TOKEN_LEN];
	mb_response *r;
	uint64_t id1;

	assert_int_equal(mb_broker_connect(b, 1, getpid(), getuid(), getgid()), 0);
	r = hello_v(b, 1, MB_PROTOCOL_VERSION);
	assert_int_equal((HRESULT)r->hresult, S_OK);
	assert_int_equal(r->body_case, MEMBROKER__V1__RESPONSE__BODY_HELLO);
	assert_int_equal(r->hello->protocol_version, MB_PROTOCOL_VERSION);
	assert_true(r->hello->session_id > 0);
	assert_int_equal(r->hello->fd_token.len, MB_WIRE_TOKEN_LEN);
	assert_int_equal(r->hello->budget, BUDGET);
	assert_int_equal(r->hello->section_size, b->section_size);
	assert_true(r->hello->section_size > MB_ADDRESS_MIN);
	assert_int_equal(r->hello->commit_credit, 0); /* the fixture grants none */
	id1 = r->hello->session_id;
	memcpy(t1, r->hello->fd_token.data, MB_WIRE_TOKEN_LEN);
	mb_wire_free_response(r);

	/* Another session: another id and another token. */
	assert_int_not_equal(open_session(b, 2, t2), id1);
	assert_memory_not_equal(t1, t2, MB_WIRE_TOKEN_LEN);
	assert_int_equal(b->reg.conns, 2);
}

static void test_hello_twice(void **state)
{
	mb_broker *b = *state;
	mb_response *r;

	open_session(b, 1, NULL);
	r = hello_v(b, 1, MB_PROTOCOL_VERSION);
	assert_int_equal((HRESULT)r->hresult, E_FAIL);
	assert_int_equal(r->body_case, MEMBROKER__V1__RESPONSE__BODY__NOT_SET);
	mb_wire_free_response(r);
	/* The first Hello's session is intact. */
	assert_int_equal(reserve(b, 1, BASE, GR), S_OK);
}

/* ---- reserve ---- */

static void test_reserve(void **state)
{
	mb_broker *b = *state;
	status st;

	open_session(b, 1, NULL);
	/* Misaligned base, bad sizes, out of range. */
	assert_int_equal(reserve(b, 1, BASE + PG, GR), E_INVALIDARG);
	assert_int_equal(reserve(b, 1, BASE + 1, GR), E_INVALIDARG);
	assert_int_equal(reserve(b, 1, BASE, 0), E_INVALIDARG);
	assert_int_equal(reserve(b, 1, BASE, PG + 1), E_INVALIDARG);
	assert_int_equal(reserve(b, 1, 0, GR), E_INVALIDARG); /* the first 64 KiB */
	assert_int_equal(reserve(b, 1, b->section_size, GR), E_INVALIDARG);
	assert_int_equal(reserve(b, 1, b->section_size - GR, 2 * GR), E_INVALIDARG);
	assert_int_equal(reserve(b, 1, BASE, UINT64_MAX & ~(GR - 1)), E_INVALIDARG);
	assert_int_equal(reserve(b, 1, UINT64_MAX & ~(GR - 1), GR), E_INVALIDARG);

	assert_int_equal(reserve(b, 1, BASE, MIB), S_OK);
	assert_int_equal(session_status(b, 1, &st), S_OK);
	assert_int_equal(st.reservations, 1);
	assert_int_equal(st.reserved, MIB);
	assert_int_equal(st.committed, 0);

	/* Overlaps: same base, inside, straddling the start. */
	assert_int_equal(reserve(b, 1, BASE, MIB), MB_E_INVALID_ADDRESS);
	assert_int_equal(reserve(b, 1, BASE + GR, GR), MB_E_INVALID_ADDRESS);
	assert_int_equal(reserve(b, 1, BASE - GR, 2 * GR), MB_E_INVALID_ADDRESS);
	assert_int_equal(reserve(b, 1, BASE + MIB - GR, 2 * GR), MB_E_INVALID_ADDRESS);
	/* Adjacent is fine, and the smallest and highest reservations too. */
	assert_int_equal(reserve(b, 1, BASE + MIB, GR), S_OK);
	assert_int_equal(reserve(b, 1, MB_ADDRESS_MIN, PG), S_OK);
	assert_int_equal(reserve(b, 1, b->section_size - GR, GR), S_OK);
	assert_int_equal(session_status(b, 1, &st), S_OK);
	assert_int_equal(st.reservations, 4);
	assert_int_equal(st.reserved, MIB + GR + PG + GR);
	assert_int_equal(b->books.ledger.committed, 0);
}

/* ---- commit ---- */

static void test_commit_refusals(void **state)
{
	mb_broker *b = *state;

	open_session(b, 1, NULL);
	assert_int_equal(reserve(b, 1, BASE, MIB), S_OK);
	/* Outside any reservation. */
	assert_int_equal(commit(b, 1, BASE + 64 * MIB, PG, 0), MB_E_INVALID_ADDRESS);
	assert_int_equal(commit(b, 1, MB_ADDRESS_MIN, PG, 0), MB_E_INVALID_ADDRESS);
	/* Crossing the reservation's end. */
	assert_int_equal(commit(b, 1, BASE + MIB - PG, 2 * PG, 0), MB_E_INVALID_ADDRESS);
	/* Bad level. */
	assert_int_equal(commit(b, 1, BASE, PG, 7), E_INVALIDARG);
	assert_int_equal(commit(b, 1, BASE, PG, 3), E_INVALIDARG);
	assert_int_equal(commit(b, 1, BASE, PG, UINT32_MAX), E_INVALIDARG);
	/* Unaligned or empty. */
	assert_int_equal(commit(b, 1, BASE + 1, PG, 0), E_INVALIDARG);
	assert_int_equal(commit(b, 1, BASE, PG - 1, 0), E_INVALIDARG);
	assert_int_equal(commit(b, 1, BASE, 0, 0), E_INVALIDARG);
	/* Wrapping. */
	assert_int_equal(commit(b, 1, BASE, UINT64_MAX & ~(PG - 1), 0), MB_E_INVALID_ADDRESS);
	assert_int_equal(b->books.ledger.committed, 0);
}

static void test_commit_over_budget(void **state)
{
	mb_broker *b = *state;
	uint64_t c0 = BUDGET * 900 / 1000 / PG; /* pages level 0 may bring the total to */
	uint64_t c1 = BUDGET * 970 / 1000 / PG;
	uint64_t all = BUDGET / PG;
	uint32_t load;
	uint64_t avail;

	open_session(b, 1, NULL);
	assert_int_equal(reserve(b, 1, BASE, 2 * BUDGET), S_OK);

	/* The whole budget at task level: refused, nothing booked. */
	assert_int_equal(commit(b, 1, BASE, BUDGET, 0), E_OUTOFMEMORY);
	assert_int_equal(b->books.ledger.committed, 0);
	assert_int_equal(commit(b, 1, BASE, (c0 + 1) * PG, 0), E_OUTOFMEMORY);
	assert_int_equal(b->books.ledger.committed, 0);

	/* Exactly what level 0 may have. */
	assert_int_equal(commit(b, 1, BASE, c0 * PG, 0), S_OK);
	assert_int_equal(b->books.ledger.committed, c0 * PG);
	assert_int_equal(commit(b, 1, BASE + c0 * PG, PG, 0), E_OUTOFMEMORY);
	assert_int_equal(b->books.ledger.committed, c0 * PG);
	assert_int_equal(memory_load(b, 1, &load, &avail), S_OK);
	assert_int_equal(load, 90); /* 89.99...% rounds up */
	assert_int_equal(avail, avail0(c0 * PG));
	assert_int_equal(avail, 0);

	/* AppDomain level goes on to 97%. */
	assert_int_equal(commit(b, 1, BASE + c0 * PG, (c1 - c0 + 1) * PG, 1), E_OUTOFMEMORY);
	assert_int_equal(b->books.ledger.committed, c0 * PG);
	assert_int_equal(commit(b, 1, BASE + c0 * PG, (c1 - c0) * PG, 1), S_OK);
	assert_int_equal(b->books.ledger.committed, c1 * PG);

	/* Process level gets all of it, and not a page more. */
	assert_int_equal(commit(b, 1, BASE + c1 * PG, (all - c1) * PG, 2), S_OK);
	assert_int_equal(b->books.ledger.committed, BUDGET);
	assert_int_equal(commit(b, 1, BASE + all * PG, PG, 2), E_OUTOFMEMORY);
	assert_int_equal(b->books.ledger.committed, BUDGET);
	assert_int_equal(memory_load(b, 1, &load, &avail), S_OK);
	assert_int_equal(load, 100);
	assert_int_equal(avail, 0);

	/* Re-committing committed pages costs nothing, so it succeeds even when full. */
	assert_int_equal(commit(b, 1, BASE, BUDGET, 0), S_OK);
	assert_int_equal(b->books.ledger.committed, BUDGET);
}

static void test_commit_same_pages_twice(void **state)
{
	mb_broker *b = *state;
	status st;

	open_session(b, 1, NULL);
	assert_int_equal(reserve(b, 1, BASE, MIB), S_OK);
	assert_int_equal(commit(b, 1, BASE, 16 * PG, 0), S_OK);
	assert_int_equal(b->books.ledger.committed, 16 * PG);
	assert_int_equal(commit(b, 1, BASE, 16 * PG, 0), S_OK);
	assert_int_equal(b->books.ledger.committed, 16 * PG);
	assert_int_equal(commit(b, 1, BASE + 4 * PG, 4 * PG, 2), S_OK);
	assert_int_equal(b->books.ledger.committed, 16 * PG);
	/* Half old, half new: only the new half is charged. */
	assert_int_equal(commit(b, 1, BASE + 8 * PG, 16 * PG, 0), S_OK);
	assert_int_equal(b->books.ledger.committed, 24 * PG);
	assert_int_equal(session_status(b, 1, &st), S_OK);
	assert_int_equal(st.committed, 24 * PG);
	assert_int_equal(st.total_committed, 24 * PG);
	assert_int_equal(st.budget, BUDGET);
}

static void test_decommit_credits(void **state)
{
	mb_broker *b = *state;

	open_session(b, 1, NULL);
	assert_int_equal(reserve(b, 1, BASE, MIB), S_OK);
	assert_int_equal(commit(b, 1, BASE, 32 * PG, 1), S_OK);
	assert_int_equal(b->books.ledger.committed, 32 * PG);
	assert_int_equal(decommit(b, 1, BASE + 8 * PG, 4 * PG), S_OK);
	assert_int_equal(b->books.ledger.committed, 28 * PG);
	/* Decommitting decommitted pages credits nothing more. */
	assert_int_equal(decommit(b, 1, BASE + 8 * PG, 4 * PG), S_OK);
	assert_int_equal(b->books.ledger.committed, 28 * PG);
	/* A range of mixed pages credits only the committed ones. */
	assert_int_equal(decommit(b, 1, BASE + 30 * PG, 10 * PG), S_OK);
	assert_int_equal(b->books.ledger.committed, 26 * PG);
	/* Refusals leave the ledger alone. */
	assert_int_equal(decommit(b, 1, BASE + 64 * MIB, PG), HOST_E_INVALIDOPERATION);
	/* Past the reservation's end: E_INVALIDARG, as the client's own check (mb_win32_plan_free).
	 */
	assert_int_equal(decommit(b, 1, BASE + MIB - PG, 2 * PG), E_INVALIDARG);
	assert_int_equal(decommit(b, 1, BASE, MIB + GR), E_INVALIDARG);
	assert_int_equal(decommit(b, 1, BASE + 1, PG), E_INVALIDARG);
	assert_int_equal(b->books.ledger.committed, 26 * PG);
	/* The whole reservation. */
	assert_int_equal(decommit(b, 1, BASE, MIB), S_OK);
	assert_int_equal(b->books.ledger.committed, 0);
	/* Committed again after a decommit: charged again. */
	assert_int_equal(commit(b, 1, BASE, 2 * PG, 0), S_OK);
	assert_int_equal(b->books.ledger.committed, 2 * PG);
}

static void test_reset_of_reserved_pages_changes_nothing(void **state)
{
	mb_broker *b = *state;

	open_session(b, 1, NULL);
	assert_int_equal(reserve(b, 1, BASE, MIB), S_OK);
	/* Reserved pages: success, nothing marked, nothing queued for reclaim. */
	assert_int_equal(reset(b, 1, BASE, PG, false), S_OK);
	assert_int_equal(reset(b, 1, BASE, PG, true), S_OK);
	mb_section *s = mb_registry_by_pipe(&b->reg, 1);
	assert_int_equal(s->resets, 0);
	assert_int_equal(commit(b, 1, BASE, 4 * PG, 0), S_OK);
	/* Mixed: only the committed pages are marked. */
	assert_int_equal(reset(b, 1, BASE, 8 * PG, false), S_OK);
	mb_region *r = mb_regmap_find(&s->map, BASE);
	assert_int_equal(mb_region_count(r, 0, 8, MB_PAGE_RESET, MB_PAGE_RESET), 4);
	assert_int_equal(mb_region_committed_in(r, 0, 8), 4);
	/* Reset pages stay charged until the broker discards them. */
	assert_int_equal(b->books.ledger.committed, 4 * PG);
	assert_int_equal(reset(b, 1, BASE, 8 * PG, true), S_OK);
	assert_int_equal(mb_region_count(r, 0, 8, MB_PAGE_RESET, MB_PAGE_RESET), 0);
	assert_int_equal(b->books.ledger.committed, 4 * PG);
	/* Outside every reservation, or running past its end. */
	assert_int_equal(reset(b, 1, BASE + 64 * MIB, PG, false), MB_E_INVALID_ADDRESS);
	assert_int_equal(reset(b, 1, BASE + MIB - PG, 2 * PG, false), MB_E_INVALID_ADDRESS);
	assert_int_equal(reset(b, 1, BASE + 1, PG, false), E_INVALIDARG);
}

/* ---- release ---- */

static void test_release(void **state)
{
	mb_broker *b = *state;
	status st;

	open_session(b, 1, NULL);
	assert_int_equal(reserve(b, 1, BASE, MIB), S_OK);
	assert_int_equal(commit(b, 1, BASE, 8 * PG, 0), S_OK);
	/* Inside the reservation but not its base. */
	assert_int_equal(release(b, 1, BASE + PG), MB_E_INVALID_ADDRESS);
	assert_int_equal(release(b, 1, BASE + GR), MB_E_INVALID_ADDRESS);
	/* Never reserved. */
	assert_int_equal(release(b, 1, BASE + 64 * MIB), HOST_E_INVALIDOPERATION);
	assert_int_equal(release(b, 1, 0), HOST_E_INVALIDOPERATION);
	assert_int_equal(b->books.ledger.committed, 8 * PG);

	assert_int_equal(release(b, 1, BASE), S_OK);
	assert_int_equal(b->books.ledger.committed, 0);
	assert_int_equal(session_status(b, 1, &st), S_OK);
	assert_int_equal(st.reservations, 0);
	assert_int_equal(st.reserved, 0);
	assert_int_equal(release(b, 1, BASE), HOST_E_INVALIDOPERATION);
	/* The address can be reserved again. */
	assert_int_equal(reserve(b, 1, BASE, MIB), S_OK);
}

static void test_not_owner(void **state)
{
	mb_broker *b = *state;

	/* Two clients of this process (same pid), and one of another process. */
	open_session(b, 1, NULL);
	open_session(b, 2, NULL);
	assert_int_equal(mb_broker_connect(b, 3, getpid() + 1, getuid(), getgid()), 0);
	{
		mb_response *r = hello_v(b, 3, MB_PROTOCOL_VERSION);
		assert_int_equal((HRESULT)r->hresult, S_OK);
		mb_wire_free_response(r);
	}
	assert_int_equal(reserve(b, 1, BASE, MIB), S_OK);
	assert_int_equal(commit(b, 1, BASE, 4 * PG, 0), S_OK);

	assert_int_equal(release(b, 2, BASE), HOST_E_NOT_OWNER);
	assert_int_equal(decommit(b, 2, BASE, PG), HOST_E_NOT_OWNER);
	assert_int_equal(commit(b, 2, BASE + 4 * PG, PG, 0), HOST_E_NOT_OWNER);
	/* Another process has its own address space: nothing there belongs to it. */
	assert_int_equal(release(b, 3, BASE), HOST_E_INVALIDOPERATION);
	assert_int_equal(commit(b, 3, BASE, PG, 0), MB_E_INVALID_ADDRESS);
	/* Nothing changed hands. */
	assert_int_equal(b->books.ledger.committed, 4 * PG);
	assert_int_equal(release(b, 1, BASE), S_OK);
	assert_int_equal(b->books.ledger.committed, 0);
}

/* ---- connections ---- */

static void test_unknown_pipe(void **state)
{
	mb_broker *b = *state;
	uint32_t load;
	uint64_t avail;
	status st;

	assert_int_equal(reserve(b, 77, BASE, GR), HOST_E_CLRNOTAVAILABLE);
	assert_int_equal(commit(b, 77, BASE, PG, 2), HOST_E_CLRNOTAVAILABLE);
	assert_int_equal(release(b, 77, BASE), HOST_E_CLRNOTAVAILABLE);
	assert_int_equal(memory_load(b, 77, &load, &avail), HOST_E_CLRNOTAVAILABLE);
	assert_int_equal(session_status(b, 77, &st), HOST_E_CLRNOTAVAILABLE);
	assert_int_equal(b->reg.conns, 0);
	assert_int_equal(b->books.ledger.committed, 0);
}

/* A Hello on a pipe the broker does not know: refused, or (where nng can deliver a connection's
 * first message before its ADD_POST event) handed back to the caller to create the session. */
static void test_unknown_pipe_hello(void **state)
{
	mb_broker *b = *state;
	mb_request req = MEMBROKER__V1__REQUEST__INIT;
	Membroker__V1__Hello h = MEMBROKER__V1__HELLO__INIT;
	nng_msg *in = NULL, *out = NULL;
	int rv;

	h.protocol_version = MB_PROTOCOL_VERSION;
	h.name = "early";
	req.request_id = 5;
	req.body_case = MEMBROKER__V1__REQUEST__BODY_HELLO;
	req.hello = &h;
	assert_int_equal(mb_wire_pack_request(&req, &in), 0);
	rv = mb_dispatch(b, 78, nng_msg_body(in), nng_msg_len(in), &out);
#ifdef MB_DISPATCH_NO_SESSION
	if (rv == MB_DISPATCH_NO_SESSION) {
		assert_null(out);
		assert_int_equal(b->reg.conns, 0);
		nng_msg_free(in);
		return;
	}
#endif
	assert_int_equal(rv, 0);
	{
		mb_response *r = mb_wire_unpack_response(nng_msg_body(out), nng_msg_len(out));
		assert_non_null(r);
		assert_int_equal((HRESULT)r->hresult, HOST_E_CLRNOTAVAILABLE);
		mb_wire_free_response(r);
	}
	assert_int_equal(b->reg.conns, 0);
	nng_msg_free(in);
	nng_msg_free(out);
}

static void test_garbage(void **state)
{
	mb_broker *b = *state;
	static const uint8_t junk[] = {0xff, 0xff, 0xff, 0xff, 0x0f, 0x00, 0x12};
	uint8_t noise[256];
	nng_msg *reply = NULL;
	uint64_t errors;

	open_session(b, 1, NULL);
	errors = b->protocol_errors;
	assert_int_equal(mb_dispatch(b, 1, junk, sizeof(junk), &reply), -1);
	assert_null(reply);
	assert_int_equal(mb_dispatch(b, 1, "", 0, &reply), -1);
	assert_null(reply);
	for (size_t i = 0; i < sizeof(noise); i++)
		noise[i] = (uint8_t)(i * 37 + 11);
	noise[0] = 0x07; /* field 0: never valid */
	assert_int_equal(mb_dispatch(b, 1, noise, sizeof(noise), &reply), -1);
	assert_null(reply);
	/* Unknown pipes get the same treatment: there is no request id to answer to. */
	assert_int_equal(mb_dispatch(b, 999, junk, sizeof(junk), &reply), -1);
	assert_null(reply);
	assert_int_equal(b->protocol_errors, errors + 4);
	check_ledger(b);
	/* The session itself is untouched (the server drops the connection, not dispatch). */
	assert_int_equal(reserve(b, 1, BASE, GR), S_OK);
}

static void test_reply_reused(void **state)
{
	mb_broker *b = *state;
	mb_request req = MEMBROKER__V1__REQUEST__INIT;
	Membroker__V1__MemoryLoad m = MEMBROKER__V1__MEMORY_LOAD__INIT;
	nng_msg *in = NULL, *out, *given;
	mb_response *r;

	open_session(b, 1, NULL);
	req.request_id = 4242;
	req.body_case = MEMBROKER__V1__REQUEST__BODY_MEMORY_LOAD;
	req.memory_load = &m;
	assert_int_equal(mb_wire_pack_request(&req, &in), 0);
	/* The server passes the request's own message back as the reply buffer. */
	given = out = in;
	assert_int_equal(mb_dispatch(b, 1, nng_msg_body(in), nng_msg_len(in), &out), 0);
	assert_ptr_equal(out, given);
	r = mb_wire_unpack_response(nng_msg_body(out), nng_msg_len(out));
	assert_non_null(r);
	assert_int_equal(r->request_id, 4242);
	assert_int_equal((HRESULT)r->hresult, S_OK);
	assert_int_equal(r->body_case, MEMBROKER__V1__RESPONSE__BODY_MEMORY_LOAD);
	assert_int_equal(r->memory_load->memory_load, 0);
	assert_int_equal(r->memory_load->available_bytes, avail0(0));
	mb_wire_free_response(r);
	nng_msg_free(out);
}

static void test_disconnect_returns_everything(void **state)
{
	mb_broker *b = *state;
	status st;

	open_session(b, 1, NULL);
	open_session(b, 2, NULL);
	assert_int_equal(reserve(b, 1, BASE, 4 * MIB), S_OK);
	assert_int_equal(reserve(b, 1, BASE + 8 * MIB, MIB), S_OK);
	assert_int_equal(commit(b, 1, BASE, 4 * MIB, 0), S_OK);
	assert_int_equal(commit(b, 1, BASE + 8 * MIB, 64 * PG, 2), S_OK);
	assert_int_equal(reserve(b, 2, BASE, 2 * MIB), S_OK);
	assert_int_equal(commit(b, 2, BASE, 2 * MIB, 1), S_OK);
	assert_int_equal(b->books.ledger.committed, 6 * MIB + 64 * PG);
	assert_int_equal(session_status(b, 2, &st), S_OK);
	assert_int_equal(st.sessions, 2);
	assert_int_equal(st.committed, 2 * MIB);
	assert_int_equal(st.total_committed, 6 * MIB + 64 * PG);

	goodbye(b, 1);
	check_ledger(b);
	assert_int_equal(b->books.ledger.committed, 2 * MIB);
	assert_int_equal(b->reg.conns, 1);
	assert_int_equal(session_status(b, 2, &st), S_OK);
	assert_int_equal(st.sessions, 1);
	assert_int_equal(st.total_committed, 2 * MIB);
	/* The ended session's pipe is unknown now. */
	assert_int_equal(reserve(b, 1, BASE, GR), HOST_E_CLRNOTAVAILABLE);

	/* Unknown pipes and repeated disconnects are no-ops. */
	mb_broker_disconnect(b, 1);
	mb_broker_disconnect(b, 12345);
	assert_int_equal(b->reg.conns, 1);
	check_ledger(b);

	/* nng 1.5.2 may report a pipe's end before its start (a peer that connects and hangs up
	 * at once): the late start adds nothing, so no connection and no pidfd outlive the pipe.
	 * Once is enough: the note is forgotten. */
	mb_broker_disconnect(b, 7);
	assert_int_equal(mb_broker_connect(b, 7, getpid(), getuid(), getgid()), -ENOTCONN);
	assert_int_equal(b->reg.conns, 1);
	assert_int_equal(mb_broker_connect(b, 7, getpid(), getuid(), getgid()), 0);
	assert_int_equal(b->reg.conns, 2);
	mb_broker_disconnect(b, 7);
	assert_int_equal(b->reg.conns, 1);

	/* A session that never said Hello ends cleanly too. */
	assert_int_equal(mb_broker_connect(b, 3, getpid(), getuid(), getgid()), 0);
	assert_int_equal(b->reg.conns, 2);
	mb_broker_disconnect(b, 3);
	assert_int_equal(b->reg.conns, 1);

	goodbye(b, 2);
	check_ledger(b);
	assert_int_equal(b->books.ledger.committed, 0);
	assert_int_equal(b->reg.conns, 0);
	assert_int_equal(mb_broker_sum_sessions(b), 0);

	/* The budget is whole again: a new session gets all of level 0. */
	open_session(b, 4, NULL);
	assert_int_equal(reserve(b, 4, BASE, BUDGET), S_OK);
	assert_int_equal(commit(b, 4, BASE, BUDGET * 900 / 1000 / PG * PG, 0), S_OK);
}

static void test_status_and_load(void **state)
{
	mb_broker *b = *state;
	uint32_t load;
	uint64_t avail;
	status st;

	open_session(b, 1, NULL);
	assert_int_equal(memory_load(b, 1, &load, &avail), S_OK);
	assert_int_equal(load, 0);
	assert_int_equal(avail, avail0(0));
	assert_int_equal(reserve(b, 1, BASE, 32 * MIB), S_OK);
	assert_int_equal(commit(b, 1, BASE, 32 * MIB, 0), S_OK);
	assert_int_equal(memory_load(b, 1, &load, &avail), S_OK);
	assert_int_equal(load, 50);
	assert_int_equal(avail, avail0(32 * MIB));
	assert_int_equal(commit(b, 1, BASE + 32 * MIB - PG, PG, 0), S_OK); /* already committed */
	assert_int_equal(decommit(b, 1, BASE, PG), S_OK);
	assert_int_equal(memory_load(b, 1, &load, &avail), S_OK);
	assert_int_equal(load, 50); /* 49.99% rounds up */
	assert_int_equal(session_status(b, 1, &st), S_OK);
	assert_int_equal(st.budget, BUDGET);
	assert_int_equal(st.committed, 32 * MIB - PG);
	assert_int_equal(st.total_committed, 32 * MIB - PG);
	assert_int_equal(st.reserved, 32 * MIB);
	assert_int_equal(st.reservations, 1);
	assert_int_equal(st.sessions, 1);
}

/* ---- section hand-over ---- */

static void test_handover(void **state)
{
	mb_broker *b = *state;
	uint8_t token[MB_WIRE_TOKEN_LEN];
	uint64_t id = open_session(b, 1, token);
	struct stat st;
	int fd;

	fd = mb_broker_handover(b, id, token, MB_WIRE_TOKEN_LEN, getuid(), getpid());
	assert_true(fd >= 0);
	assert_int_equal(fstat(fd, &st), 0);
	assert_int_equal((uint64_t)st.st_size, b->section_size);
	assert_int_equal(close(fd), 0);
	/* One-time: the same token again is refused. */
	assert_int_equal(mb_broker_handover(b, id, token, MB_WIRE_TOKEN_LEN, getuid(), getpid()),
			 -EPERM);
}

static void test_handover_wrong_token_burns(void **state)
{
	mb_broker *b = *state;
	uint8_t token[MB_WIRE_TOKEN_LEN], wrong[MB_WIRE_TOKEN_LEN];
	uint64_t id = open_session(b, 1, token);

	memcpy(wrong, token, sizeof(wrong));
	wrong[MB_WIRE_TOKEN_LEN - 1] ^= 0x01;
	assert_int_equal(mb_broker_handover(b, id, wrong, MB_WIRE_TOKEN_LEN, getuid(), getpid()),
			 -EPERM);
	assert_int_equal(mb_broker_handover(b, id, token, MB_WIRE_TOKEN_LEN, getuid(), getpid()),
			 -EPERM);
}

static void test_handover_wrong_peer_does_not_burn(void **state)
{
	mb_broker *b = *state;
	uint8_t t1[MB_WIRE_TOKEN_LEN], t2[MB_WIRE_TOKEN_LEN], t3[MB_WIRE_TOKEN_LEN];
	uint64_t id1 = open_session(b, 1, t1);
	uint64_t id2 = open_session(b, 2, t2);
	uint64_t id3 = open_session(b, 3, t3);
	int fd;

	/* Right token from another uid, then from another pid: refused, and the token is not
	 * burnt (another process's guess must not cost the client its hand-over). */
	assert_int_equal(mb_broker_handover(b, id1, t1, MB_WIRE_TOKEN_LEN, getuid() + 1, getpid()),
			 -EPERM);
	fd = mb_broker_handover(b, id1, t1, MB_WIRE_TOKEN_LEN, getuid(), getpid());
	assert_true(fd >= 0);
	close(fd);
	assert_int_equal(mb_broker_handover(b, id2, t2, MB_WIRE_TOKEN_LEN, getuid(), getpid() + 1),
			 -EPERM);
	fd = mb_broker_handover(b, id2, t2, MB_WIRE_TOKEN_LEN, getuid(), getpid());
	assert_true(fd >= 0);
	close(fd);
	/* A token of the wrong length, another session's token, an unknown session. */
	assert_int_equal(mb_broker_handover(b, id3, t3, MB_WIRE_TOKEN_LEN - 1, getuid(), getpid()),
			 -EPERM);
	assert_int_equal(
	    mb_broker_handover(b, id3 + 100, t3, MB_WIRE_TOKEN_LEN, getuid(), getpid()), -EPERM);
	assert_int_equal(mb_broker_handover(b, 0, t3, MB_WIRE_TOKEN_LEN, getuid(), getpid()),
			 -EPERM);

	/* Other sessions' tokens are unaffected by refusals aimed at unknown ids. */
	open_session(b, 4, NULL);
	{
		uint8_t t5[MB_WIRE_TOKEN_LEN];
		uint64_t id5 = open_session(b, 5, t5);
		fd = mb_broker_handover(b, id5, t5, MB_WIRE_TOKEN_LEN, getuid(), getpid());
		assert_true(fd >= 0);
		close(fd);
	}
	/* Session 3 got a wrong-length attempt: that burns it as well. */
	assert_int_equal(mb_broker_handover(b, id3, t3, MB_WIRE_TOKEN_LEN, getuid(), getpid()),
			 -EPERM);
	/* A session that ended cannot be handed over. */
	{
		uint8_t t6[MB_WIRE_TOKEN_LEN];
		uint64_t id6 = open_session(b, 6, t6);
		goodbye(b, 6);
		assert_int_equal(
		    mb_broker_handover(b, id6, t6, MB_WIRE_TOKEN_LEN, getuid(), getpid()), -EPERM);
	}
}

/* ---- commit credit ---- */

/* What the broker may bring the total to with credit: 80% of the budget (under the task ceiling).
 */
#define CREDIT_LIMIT (BUDGET * MB_CREDIT_LIMIT_PERMILLE / 1000)
/* Pages a task-level commit may bring the total to. */
#define C0 (BUDGET * 900 / 1000 / PG)

static void test_credit_hello(void **state)
{
	mb_broker *b = *state;
	mb_response *r;

	assert_int_equal(mb_broker_connect(b, 1, getpid(), getuid(), getgid()), 0);
	r = hello_v(b, 1, MB_PROTOCOL_VERSION);
	assert_int_equal((HRESULT)r->hresult, S_OK);
	assert_int_equal(r->hello->commit_credit, CREDIT);
	mb_wire_free_response(r);
	/* Announced, not granted: credit comes with the first commit, so an idle client holds
	 * none of the budget. */
	assert_non_null(sess(b, 1)->credit_word);
	assert_int_equal(sess(b, 1)->credit, 0);
	assert_int_equal(word(b, 1), 0);
	assert_int_equal(b->books.ledger.committed, 0);
}

static void test_credit_first_commit_tops_up(void **state)
{
	mb_broker *b = *state;
	uint32_t load;
	uint64_t avail;
	status st;

	open_session(b, 1, NULL);
	assert_int_equal(reserve(b, 1, BASE, 8 * MIB), S_OK);
	assert_int_equal(session_status(b, 1, &st), S_OK);
	assert_int_equal(st.credit, 0);
	assert_int_equal(st.total_credit, 0);

	assert_int_equal(commit(b, 1, BASE, 4 * PG, 0), S_OK);
	assert_int_equal(sess(b, 1)->credit, CREDIT);
	assert_int_equal(word(b, 1), CREDIT);
	assert_int_equal(b->books.credit_total, CREDIT);
	/* The credit is charged like a commit: the budget can never be overdrawn by it. */
	assert_int_equal(b->books.ledger.committed, 4 * PG + CREDIT);

	/* What clients see leaves unused credit out: it is held, not used. */
	assert_int_equal(session_status(b, 1, &st), S_OK);
	assert_int_equal(st.committed, 4 * PG);
	assert_int_equal(st.total_committed, 4 * PG);
	assert_int_equal(st.credit, CREDIT);
	assert_int_equal(st.total_credit, CREDIT);
	assert_int_equal(memory_load(b, 1, &load, &avail), S_OK);
	assert_int_equal(load, 1);
	assert_int_equal(avail, avail0(4 * PG));

	/* Full credit: the next commit adds nothing to it. */
	assert_int_equal(commit(b, 1, BASE + 4 * PG, 4 * PG, 1), S_OK);
	assert_int_equal(sess(b, 1)->credit, CREDIT);
	assert_int_equal(word(b, 1), CREDIT);
	assert_int_equal(b->books.ledger.committed, 8 * PG + CREDIT);

	/* Credit per session; totals over all of them. */
	open_session(b, 2, NULL);
	assert_int_equal(reserve(b, 2, BASE, MIB), S_OK);
	assert_int_equal(commit(b, 2, BASE, 2 * PG, 0), S_OK);
	assert_int_equal(sess(b, 2)->credit, CREDIT);
	assert_int_equal(b->books.ledger.committed, 10 * PG + 2 * CREDIT);
	assert_int_equal(session_status(b, 2, &st), S_OK);
	assert_int_equal(st.committed, 2 * PG);
	assert_int_equal(st.total_committed, 10 * PG);
	assert_int_equal(st.credit, CREDIT);
	assert_int_equal(st.total_credit, 2 * CREDIT);
	assert_int_equal(memory_load(b, 2, &load, &avail), S_OK);
	assert_int_equal(avail, avail0(10 * PG));

	/* Credit a client has used but not reported yet is memory in use: it counts. */
	assert_true(take(b, 1, 16 * PG));
	assert_int_equal(session_status(b, 1, &st), S_OK);
	assert_int_equal(st.committed, 8 * PG + 16 * PG);
	assert_int_equal(st.credit, CREDIT - 16 * PG);
	assert_int_equal(st.total_committed, 10 * PG + 16 * PG);
	assert_int_equal(st.total_credit, 2 * CREDIT - 16 * PG);
	assert_int_equal(memory_load(b, 1, &load, &avail), S_OK);
	assert_int_equal(avail, avail0(26 * PG));
	assert_int_equal(b->books.ledger.committed, 10 * PG + 2 * CREDIT);
}

static void test_credit_sync_books_local_commits(void **state)
{
	mb_broker *b = *state;
	uint64_t credit = 0;
	status st;

	open_session(b, 1, NULL);
	assert_int_equal(reserve(b, 1, BASE, 8 * MIB), S_OK);
	assert_int_equal(commit(b, 1, BASE, PG, 0), S_OK);

	/* 16 pages committed by the client alone, then reported. */
	assert_true(take(b, 1, 16 * PG));
	assert_int_equal(b->books.ledger.committed, PG + CREDIT);
	{
		local_commit e = {BASE + PG, 16 * PG, 2};
		assert_int_equal(sync_req(b, 1, &e, 1, &credit), S_OK);
	}
	assert_int_equal(credit, CREDIT); /* topped up again in the same round trip */
	assert_int_equal(sess(b, 1)->credit, CREDIT);
	assert_int_equal(word(b, 1), CREDIT);
	assert_int_equal(mb_section_committed(sess(b, 1)), 17 * PG);
	assert_int_equal(sess(b, 1)->max_level, 2); /* reclaim order follows reported levels */
	assert_int_equal(b->books.ledger.committed, 17 * PG + CREDIT);
	assert_int_equal(session_status(b, 1, &st), S_OK);
	assert_int_equal(st.committed, 17 * PG);
	assert_int_equal(st.credit, CREDIT);

	/* A round-trip commit overtook the report of the same pages: charged once, not twice. */
	assert_true(take(b, 1, 4 * PG));
	assert_int_equal(commit(b, 1, BASE + 32 * PG, 4 * PG, 0), S_OK);
	assert_int_equal(b->books.ledger.committed, 21 * PG + CREDIT);
	assert_int_equal(sync1(b, 1, BASE + 32 * PG, 4 * PG, 0), S_OK);
	assert_int_equal(b->books.ledger.committed, 21 * PG + CREDIT);
	assert_int_equal(sess(b, 1)->credit, CREDIT);
	assert_int_equal(word(b, 1), CREDIT);

	/* Half overlapping: only the new half is charged. */
	assert_true(take(b, 1, 4 * PG));
	assert_int_equal(sync1(b, 1, BASE + 34 * PG, 4 * PG, 0), S_OK);
	assert_int_equal(b->books.ledger.committed, 23 * PG + CREDIT);
	assert_int_equal(mb_section_committed(sess(b, 1)), 23 * PG);

	/* Several commits in one Sync, in two reservations. */
	assert_int_equal(reserve(b, 1, BASE + 16 * MIB, MIB), S_OK);
	assert_true(take(b, 1, 3 * PG));
	{
		local_commit e[] = {
		    {BASE + 100 * PG, PG, 0},
		    {BASE + 16 * MIB, PG, 1},
		    {BASE + 16 * MIB + MIB - PG, PG, 0},
		};
		assert_int_equal(sync_req(b, 1, e, 3, &credit), S_OK);
	}
	assert_int_equal(credit, CREDIT);
	assert_int_equal(b->books.ledger.committed, 26 * PG + CREDIT);
	assert_int_equal(session_status(b, 1, &st), S_OK);
	assert_int_equal(st.committed, 26 * PG);
	assert_int_equal(st.total_committed, 26 * PG);

	/* The pages are ordinary commits now: a decommit credits them like any other. */
	assert_int_equal(decommit(b, 1, BASE + PG, 16 * PG), S_OK);
	assert_int_equal(b->books.ledger.committed, 10 * PG + CREDIT);

	/* An empty Sync only asks for credit. */
	assert_true(take(b, 1, CREDIT));
	assert_int_equal(sync_req(b, 1, NULL, 0, &credit), S_OK);
	assert_int_equal(credit, 0); /* all of it used, not reported: nothing to top up */
	assert_int_equal(sess(b, 1)->credit, CREDIT);
}

/* A Sync carrying local reservations (and commits in them, after them). */
/* A Sync carrying local frees (decommits and releases), then reservations, then commits. */
typedef struct local_free {
	uint64_t address, size;
	bool release;
} local_free;

static HRESULT sync_frees(mb_broker *b, uint32_t pipe, const local_free *f, size_t nf,
			  const uint64_t (*res)[2], size_t nres, const local_commit *e, size_t n,
			  bool exhausted)
{
	mb_request req = MEMBROKER__V1__REQUEST__INIT;
	Membroker__V1__Sync m = MEMBROKER__V1__SYNC__INIT;
	Membroker__V1__LocalCommit lc[MB_WIRE_MAX_SYNC];
	Membroker__V1__LocalCommit *ptrs[MB_WIRE_MAX_SYNC];
	Membroker__V1__LocalReserve lr[MB_WIRE_MAX_SYNC];
	Membroker__V1__LocalReserve *rptrs[MB_WIRE_MAX_SYNC];
	Membroker__V1__LocalFree lf[MB_WIRE_MAX_SYNC_FREES];
	Membroker__V1__LocalFree *fptrs[MB_WIRE_MAX_SYNC_FREES];
	mb_response *r;
	HRESULT hr;

	pack_sync(&req, &m, lc, ptrs, e, n);
	for (size_t i = 0; i < nres; i++) {
		membroker__v1__local_reserve__init(&lr[i]);
		lr[i].address = res[i][0];
		lr[i].size = res[i][1];
		rptrs[i] = &lr[i];
	}
	m.n_reserves = nres;
	m.reserves = rptrs;
	for (size_t i = 0; i < nf; i++) {
		membroker__v1__local_free__init(&lf[i]);
		lf[i].address = f[i].address;
		lf[i].size = f[i].size;
		lf[i].release = f[i].release;
		fptrs[i] = &lf[i];
	}
	m.n_frees = nf;
	m.frees = fptrs;
	m.exhausted = exhausted;
	r = call(b, pipe, &req);
	hr = (HRESULT)r->hresult;
	mb_wire_free_response(r);
	return hr;
}

static HRESULT sync_reserves(mb_broker *b, uint32_t pipe, const uint64_t (*res)[2], size_t nres,
			     const local_commit *e, size_t n)
{
	return sync_frees(b, pipe, NULL, 0, res, nres, e, n, false);
}

/*
 * Reservation credit: granted with the first Reserve, counted against the quotas, spent by the
 * reservations a Sync reports (checked with the Win32 rules first), never believed beyond the
 * grant.
 */
static void test_reserve_credit(void **state)
{
	mb_broker *b = *state;
	b->conf.client_max_reservations = 10;
	b->conf.client_max_reserved = 64 * MIB;

	open_session(b, 1, NULL);
	mb_section *s = sess(b, 1);
	assert_int_equal(s->reserve_count, 0);
	assert_int_equal(reserve(b, 1, BASE, 8 * MIB), S_OK);
	/* Cut to the quotas: 10 - 1 reservations, 64 - 8 MiB. */
	assert_int_equal(s->reserve_count, 9);
	assert_int_equal(s->reserve_bytes, 56 * MIB);
	assert_int_equal(s->credit_word->reserve_count, 9);
	assert_int_equal(s->credit_word->reserve_bytes, 56 * MIB);

	/* The client reserves two by itself (takes from the word) and reports them, with a commit
	 * made in one of them from commit credit. */
	assert_int_equal(commit(b, 1, BASE, PG, 0), S_OK); /* brings commit credit */
	assert_true(mb_reserve_take(s->credit_word, 4 * MIB));
	assert_true(mb_reserve_take(s->credit_word, GR));
	assert_false(mb_reserve_take(s->credit_word, 64 * MIB)); /* more bytes than granted */
	assert_true(take(b, 1, 4 * PG));
	{
		const uint64_t res[2][2] = {{BASE + 16 * MIB, 4 * MIB}, {BASE + 32 * MIB, GR}};
		local_commit e = {BASE + 16 * MIB, 4 * PG, 0};
		assert_int_equal(sync_reserves(b, 1, res, 2, &e, 1), S_OK);
	}
	assert_int_equal(s->map.count, 3);
	assert_int_equal(s->map.reserved_bytes, 12 * MIB + GR);
	assert_int_equal(mb_section_committed(s), 5 * PG);
	/* Topped up again within the quotas. */
	assert_int_equal(s->reserve_count, 7);
	assert_int_equal(s->reserve_bytes, 64 * MIB - (12 * MIB + GR));
	assert_int_equal(s->credit_word->reserve_count, 7);

	/* Refused, and nothing booked: misaligned, overlapping, outside the range, beyond the
	 * credit (a forged word gains nothing). */
	{
		const uint64_t bad[][2] = {
		    {BASE + 40 * MIB + PG, GR},	 /* not 64 KiB aligned */
		    {BASE + 40 * MIB, GR + 1},	 /* not a page multiple */
		    {BASE + 32 * MIB, GR},	 /* overlaps a reservation */
		    {BASE + 4 * MIB, GR},	 /* inside another one */
		    {0, GR},			 /* below the usable range */
		    {BASE + 40 * MIB, 60 * MIB}, /* more bytes than the credit */
		};
		for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
			assert_int_not_equal(sync_reserves(b, 1, &bad[i], 1, NULL, 0), S_OK);
			assert_int_equal(s->map.count, 3);
		}
	}
	s->credit_word->reserve_count = 1000; /* forged */
	for (int i = 0; i < 7; i++) {
		const uint64_t one[1][2] = {{BASE + 48 * MIB + (uint64_t)i * GR, GR}};
		assert_int_equal(sync_reserves(b, 1, one, 1, NULL, 0), S_OK);
	}
	assert_int_equal(s->map.count, 10);
	/* The quota holds exactly: the credit is gone, and a Reserve is refused. */
	assert_int_equal(s->reserve_count, 0);
	{
		const uint64_t one[1][2] = {{BASE + 60 * MIB, GR}};
		assert_int_not_equal(sync_reserves(b, 1, one, 1, NULL, 0), S_OK);
	}
	assert_int_equal(reserve(b, 1, BASE + 60 * MIB, GR), E_OUTOFMEMORY);
	assert_int_equal(s->map.count, 10);
	/* A release makes room; the next Reserve takes the client's own unused credit back first
	 * when it stands in the way. */
	assert_int_equal(release(b, 1, BASE + 48 * MIB), S_OK);
	assert_int_equal(reserve(b, 1, BASE + 60 * MIB, GR), S_OK);
	assert_true(s->map.count + s->reserve_count <= 10);
	assert_true(s->map.reserved_bytes + s->reserve_bytes <= 64 * MIB);
}

/*
 * Frees the client did by itself are booked first in a Sync (so a reservation made again at the
 * same place, or pages committed again, come after them), refunded and never punched by the
 * broker; forged ones are refused and stop the Sync. A Sync that says the credit ran out raises
 * the session's target, up to 16 times commit_credit; taking the credit back resets it.
 */
static void test_credit_sync_frees(void **state)
{
	mb_broker *b = *state;
	status st;

	open_session(b, 1, NULL);
	mb_section *s = sess(b, 1);
	assert_int_equal(reserve(b, 1, BASE, 8 * MIB), S_OK);
	assert_int_equal(commit(b, 1, BASE, 64 * PG, 0), S_OK);
	assert_int_equal(s->credit_word->target, CREDIT);
	/* The client wrote the pages; the broker must leave them to it. */
	assert_int_equal(pwrite(s->section_fd, "x", 1, (off_t)(BASE + 8 * PG)), 1);

	/* A decommit of 16 booked pages, and 4 of them committed again from credit afterwards. */
	assert_true(take(b, 1, 4 * PG));
	{
		local_free f = {BASE + 8 * PG, 16 * PG, false};
		local_commit e = {BASE + 8 * PG, 4 * PG, 0};
		assert_int_equal(sync_frees(b, 1, &f, 1, NULL, 0, &e, 1, false), S_OK);
	}
	assert_int_equal(mb_section_committed(s), 52 * PG);
	assert_int_equal(b->books.ledger.committed, 52 * PG + CREDIT);
	assert_true(mb_memfd_allocated(s->section_fd) > 0); /* not punched by the broker */

	/* A release, and a new reservation at the same place with a commit in it. */
	assert_true(mb_reserve_take(s->credit_word, 8 * MIB));
	assert_true(take(b, 1, PG));
	{
		local_free f = {BASE, 0, true};
		const uint64_t res[1][2] = {{BASE, 8 * MIB}};
		local_commit e = {BASE + MIB, PG, 0};
		assert_int_equal(sync_frees(b, 1, &f, 1, res, 1, &e, 1, false), S_OK);
	}
	assert_int_equal(s->map.count, 1);
	assert_int_equal(mb_section_committed(s), PG);
	assert_int_equal(b->books.ledger.committed, PG + CREDIT);
	assert_int_equal(session_status(b, 1, &st), S_OK);
	assert_int_equal(st.committed, PG);

	/* Forged: a release of what it does not hold, a decommit outside its reservation, a
	 * decommit that is not whole pages, a release with a size. Each is refused, and nothing
	 * after it in the same Sync is booked. */
	{
		const local_free bad[] = {
		    {BASE + 64 * MIB, 0, true},		  {BASE + 64 * MIB, PG, false},
		    {BASE + PG + 1, PG, false},		  {BASE, PG, true},
		    {BASE + 8 * MIB - PG, 2 * PG, false},
		};
		for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
			local_free f[2] = {bad[i], {BASE + MIB, PG, false}};
			assert_int_equal(sync_frees(b, 1, f, 2, NULL, 0, NULL, 0, false),
					 E_INVALIDARG);
			assert_int_equal(mb_section_committed(s), PG);
			assert_int_equal(s->map.count, 1);
		}
	}

	/* The target: doubled by each Sync that says the credit ran out, up to 16x. */
	for (int i = 1; i <= 6; i++) {
		assert_int_equal(sync_frees(b, 1, NULL, 0, NULL, 0, NULL, 0, true), S_OK);
		uint64_t want = CREDIT << (i < 4 ? i : 4);
		assert_int_equal(mb_credit_target(&b->books, s), want);
		assert_int_equal(s->credit_word->target, want);
		assert_int_equal(s->credit, want);
		assert_int_equal(b->books.ledger.committed, PG + want);
	}
	/* Taken back: the credit is refunded and the target starts again. */
	assert_int_equal(mb_credit_take_back(&b->books, s), CREDIT << 4);
	assert_int_equal(s->credit_word->target, CREDIT);
	assert_int_equal(b->books.ledger.committed, PG);
}

/* Without commit credit there is no reservation credit either: every reservation is asked for. */
static void test_reserve_credit_off(void **state)
{
	mb_broker *b = *state;

	open_session(b, 1, NULL);
	assert_int_equal(reserve(b, 1, BASE, 8 * MIB), S_OK);
	assert_int_equal(sess(b, 1)->reserve_count, 0);
	const uint64_t one[1][2] = {{BASE + 16 * MIB, GR}};
	assert_int_equal(sync_reserves(b, 1, one, 1, NULL, 0), E_INVALIDARG);
	assert_int_equal(sess(b, 1)->map.count, 1);
}

static void test_credit_sync_refusals(void **state)
{
	mb_broker *b = *state;
	const local_commit good = {BASE + PG, PG, 0};
	uint64_t ledger, credit, pages;

	/* No session, or one that has not said Hello. */
	assert_int_equal(sync_req(b, 77, &good, 1, NULL), HOST_E_CLRNOTAVAILABLE);
	assert_int_equal(mb_broker_connect(b, 1, getpid(), getuid(), getgid()), 0);
	assert_int_equal(sync_req(b, 1, &good, 1, NULL), BEFORE_HELLO_HR);
	assert_int_equal(sync_req(b, 1, NULL, 0, NULL), BEFORE_HELLO_HR);
	assert_int_equal(b->books.ledger.committed, 0);

	/* No credit granted yet: nothing can have been committed locally. */
	open_session(b, 2, NULL);
	assert_int_equal(reserve(b, 2, BASE, 8 * MIB), S_OK);
	assert_int_equal(sync_req(b, 2, &good, 1, NULL), E_INVALIDARG);
	assert_non_null(strstr(last_detail, "credit"));
	assert_int_equal(b->books.ledger.committed, 0);

	assert_int_equal(commit(b, 2, BASE, PG, 0), S_OK);
	assert_true(take(b, 2, 8 * PG));
	ledger = b->books.ledger.committed;
	credit = sess(b, 2)->credit;
	pages = mb_section_committed(sess(b, 2));
	{
		static const struct {
			local_commit e;
			HRESULT hr;
			const char *why;
		} bad[] = {
		    {{BASE + PG + 1, PG, 0}, E_INVALIDARG, "whole pages"},
		    {{BASE + PG, PG + 1, 0}, E_INVALIDARG, "whole pages"},
		    {{BASE + PG, PG - 1, 0}, E_INVALIDARG, "whole pages"},
		    {{BASE + PG, 0, 0}, E_INVALIDARG, "whole pages"},
		    {{BASE + PG, PG, 3}, E_INVALIDARG, "level 3"},
		    {{BASE + PG, PG, UINT32_MAX}, E_INVALIDARG, "level"},
		    {{BASE + PG, CREDIT + PG, 0}, E_INVALIDARG, "credit"},
		    {{BASE + PG, UINT64_MAX & ~(PG - 1), 0}, E_INVALIDARG, "credit"},
		    {{BASE + 64 * MIB, PG, 0}, MB_E_INVALID_ADDRESS, "reservation"},
		    {{BASE + 8 * MIB - PG, 2 * PG, 0}, MB_E_INVALID_ADDRESS, "reservation"},
		    /* The credit page itself, and the addresses no reservation can have. */
		    {{0, PG, 0}, MB_E_INVALID_ADDRESS, "reservation"},
		    {{MB_ADDRESS_MIN, PG, 0}, MB_E_INVALID_ADDRESS, "reservation"},
		    {{UINT64_MAX & ~(PG - 1), PG, 0}, MB_E_INVALID_ADDRESS, "reservation"},
		};
		for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
			assert_int_equal(sync_req(b, 2, &bad[i].e, 1, NULL), bad[i].hr);
			assert_non_null(strstr(last_detail, bad[i].why));
			assert_int_equal(b->books.ledger.committed, ledger);
			assert_int_equal(sess(b, 2)->credit, credit);
			assert_int_equal(mb_section_committed(sess(b, 2)), pages);
			assert_int_equal(word(b, 2), CREDIT - 8 * PG);
		}
	}

	/* A bad entry after good ones: those are booked, the rest is refused, the books agree. */
	{
		local_commit e[] = {{BASE + PG, 4 * PG, 0}, {BASE + 5 * PG, PG, 9}};
		assert_int_equal(sync_req(b, 2, e, 2, NULL), E_INVALIDARG);
	}
	assert_int_equal(b->books.ledger.committed, ledger);
	assert_int_equal(sess(b, 2)->credit, credit - 4 * PG);
	assert_int_equal(mb_section_committed(sess(b, 2)), pages + 4 * PG);
	assert_int_equal(word(b, 2), CREDIT - 8 * PG); /* no top-up after a refusal */
	assert_int_equal(sync1(b, 2, BASE + 5 * PG, 4 * PG, 0), S_OK);
	assert_int_equal(sess(b, 2)->credit, CREDIT);
	assert_int_equal(b->books.ledger.committed, 9 * PG + CREDIT);

	/* Together more than the credit: booked while it lasts, then refused. */
	{
		local_commit e[] = {{BASE + 16 * PG, CREDIT / 2, 0},
				    {BASE + 16 * PG + CREDIT / 2, CREDIT / 2, 0},
				    {BASE + 16 * PG + CREDIT, PG, 0}};
		assert_int_equal(sync_req(b, 2, e, 3, NULL), E_INVALIDARG);
	}
	assert_int_equal(sess(b, 2)->credit, 0);
	assert_int_equal(b->books.ledger.committed, 9 * PG + CREDIT);
	assert_int_equal(mb_section_committed(sess(b, 2)), 9 * PG + CREDIT);

	/* More entries than a Sync may carry is a protocol violation, not a refusal. */
	{
		mb_request req = MEMBROKER__V1__REQUEST__INIT;
		Membroker__V1__Sync m = MEMBROKER__V1__SYNC__INIT;
		Membroker__V1__LocalCommit lc[MB_WIRE_MAX_SYNC + 1];
		Membroker__V1__LocalCommit *ptrs[MB_WIRE_MAX_SYNC + 1];
		local_commit e[MB_WIRE_MAX_SYNC + 1];
		nng_msg *in = NULL, *out = NULL;
		uint64_t errors = b->protocol_errors;

		for (size_t i = 0; i < MB_WIRE_MAX_SYNC + 1; i++)
			e[i] = (local_commit){BASE + 512 * PG + i * PG, PG, 0};
		pack_sync(&req, &m, lc, ptrs, e, MB_WIRE_MAX_SYNC + 1);
		assert_int_equal(mb_wire_pack_request(&req, &in), 0);
		assert_int_equal(mb_dispatch(b, 2, nng_msg_body(in), nng_msg_len(in), &out),
				 MB_DISPATCH_DROP);
		assert_null(out);
		assert_int_equal(b->protocol_errors, errors + 1);
		nng_msg_free(in);
	}
	check_ledger(b);
	assert_int_equal(b->books.ledger.committed, 9 * PG + CREDIT);
}

static void test_credit_revoked_for_commit(void **state)
{
	mb_broker *b = *state;
	uint64_t credit = 1;
	status st;

	open_session(b, 1, NULL);
	open_session(b, 2, NULL);
	assert_int_equal(reserve(b, 1, BASE, 8 * MIB), S_OK);
	assert_int_equal(reserve(b, 2, BASE, BUDGET), S_OK);
	assert_int_equal(commit(b, 1, BASE, PG, 0), S_OK);
	assert_int_equal(sess(b, 1)->credit, CREDIT);
	assert_true(take(b, 1, 16 * PG)); /* used, not reported */

	/* Fits at task level only if session 1's unused credit goes back to the budget. */
	assert_true(PG + CREDIT + (C0 - 17) * PG > C0 * PG);
	assert_int_equal(commit(b, 2, BASE, (C0 - 17) * PG, 0), S_OK);
	assert_int_equal(word(b, 1), 0);
	assert_int_equal(sess(b, 1)->credit, 16 * PG); /* what it used stays charged */
	assert_int_equal(b->books.credit_total, 16 * PG);
	assert_int_equal(b->books.credit_taken_back_bytes, CREDIT - 16 * PG);
	assert_int_equal(b->books.credit_taken_back, 1);
	assert_int_equal(sess(b, 2)->credit, 0); /* over 80%: no credit for anyone */
	assert_int_equal(b->books.ledger.committed, C0 * PG);
	assert_int_equal(session_status(b, 1, &st), S_OK);
	assert_int_equal(st.committed, 17 * PG);
	assert_int_equal(st.credit, 0);
	assert_int_equal(st.total_committed, C0 * PG);

	/* Its local commits are still booked when reported. */
	{
		local_commit e = {BASE + PG, 16 * PG, 0};
		assert_int_equal(sync_req(b, 1, &e, 1, &credit), S_OK);
	}
	assert_int_equal(credit, 0);
	assert_int_equal(sess(b, 1)->credit, 0);
	assert_int_equal(b->books.credit_total, 0);
	assert_int_equal(b->books.ledger.committed, C0 * PG);

	/* Nothing left to take back: a commit that does not fit is refused, no revocation. */
	assert_int_equal(commit(b, 2, BASE + (C0 - 17) * PG, PG, 0), E_OUTOFMEMORY);
	assert_int_equal(b->books.credit_taken_back, 1);
	assert_int_equal(b->books.ledger.committed, C0 * PG);
}

static void test_credit_revoked_on_low(void **state)
{
	mb_broker *b = *state;

	open_session(b, 1, NULL);
	open_session(b, 2, NULL);
	assert_int_equal(reserve(b, 1, BASE, MIB), S_OK);
	assert_int_equal(reserve(b, 2, BASE, BUDGET), S_OK);
	assert_int_equal(commit(b, 1, BASE, PG, 0), S_OK);
	assert_int_equal(sess(b, 1)->credit, CREDIT);
	assert_int_equal(b->pressure, 3);

	/* Fits at AppDomain level with the credit still out, and brings use to 90%: Low. The
	 * AppDomain client is then granted credit for its own level, under that ceiling. */
	assert_int_equal(commit(b, 2, BASE, C0 * PG, 1), S_OK);
	assert_int_equal(b->pressure, 1);
	assert_int_equal(word(b, 1), 0);
	assert_int_equal(sess(b, 1)->credit, 0);
	assert_int_equal(b->books.credit_total, sess(b, 2)->credit);
	assert_int_equal(sess(b, 2)->credit_word->credit_level, 1);
	assert_int_equal(b->books.credit_taken_back_bytes, CREDIT);
	assert_int_equal(b->books.ledger.committed, PG + C0 * PG + sess(b, 2)->credit);
	assert_true(b->books.ledger.committed <= mb_ledger_ceiling(&b->books.ledger, 1));
}

static void test_credit_limit_80_percent(void **state)
{
	mb_broker *b = *state;
	const uint64_t x = 51 * MIB;
	const uint64_t room = (CREDIT_LIMIT - x) / PG * PG;

	assert_true(room > 0 && room < CREDIT);
	open_session(b, 1, NULL);
	open_session(b, 2, NULL);
	assert_int_equal(reserve(b, 1, BASE, BUDGET), S_OK);
	assert_int_equal(reserve(b, 2, BASE, MIB), S_OK);

	/* Cut to what keeps the total under 80%, in whole pages. */
	assert_int_equal(commit(b, 1, BASE, x, 0), S_OK);
	assert_int_equal(sess(b, 1)->credit, room);
	assert_int_equal(word(b, 1), room);
	assert_int_equal(b->books.ledger.committed, x + room);
	assert_true(b->books.ledger.committed <= CREDIT_LIMIT);

	/* Less than a page left under the limit: none for the next session. */
	assert_true(CREDIT_LIMIT - (x + room) < PG);
	assert_int_equal(commit(b, 2, BASE, PG, 0), S_OK);
	assert_int_equal(sess(b, 2)->credit, 0);
	assert_int_equal(word(b, 2), 0);
	/* And none once past it; what is held is not taken back for that. */
	assert_int_equal(commit(b, 1, BASE + x, MIB, 0), S_OK);
	assert_int_equal(sess(b, 1)->credit, room);
	assert_int_equal(sess(b, 2)->credit, 0);
	assert_int_equal(b->books.ledger.committed, x + MIB + room + PG);

	/* Room again after a decommit: the next grant tops up to the full amount. */
	assert_int_equal(decommit(b, 1, BASE, 16 * MIB), S_OK);
	assert_int_equal(commit(b, 2, BASE + PG, PG, 0), S_OK);
	assert_int_equal(sess(b, 2)->credit, CREDIT);
	assert_int_equal(sync_req(b, 1, NULL, 0, NULL), S_OK);
	assert_int_equal(sess(b, 1)->credit, CREDIT);
	assert_int_equal(word(b, 1), CREDIT);
}

/*
 * Past the task rule a client that commits at eAppDomainCritical or eProcessCritical is granted
 * credit under that level's ceiling, marked for commits at that level and above; task-level
 * commits never get it; and it is taken back like any credit for a commit that needs the room.
 */
static void test_credit_per_level(void **state)
{
	mb_broker *b = *state;
	mb_ledger *l = &b->books.ledger;

	open_session(b, 1, NULL);
	open_session(b, 2, NULL);
	assert_int_equal(reserve(b, 1, BASE, 8 * MIB), S_OK);
	assert_int_equal(reserve(b, 2, BASE, 62 * MIB), S_OK);
	mb_section *s1 = sess(b, 1), *s2 = sess(b, 2);

	/* Past 80 %: a task commit brings no credit. */
	assert_int_equal(commit(b, 2, BASE, 54 * MIB, 0), S_OK);
	assert_int_equal(s2->credit, 0);

	/* An AppDomain commit does, for AppDomain commits and above. */
	assert_int_equal(commit(b, 1, BASE, PG, 1), S_OK);
	assert_int_equal(s1->credit, CREDIT);
	assert_int_equal(word(b, 1), CREDIT);
	assert_int_equal(s1->credit_word->credit_level, 1);
	assert_true(l->committed <= mb_ledger_ceiling(l, 1));
	assert_false(mb_credit_level_allows(s1->credit_word, 0));
	assert_true(mb_credit_level_allows(s1->credit_word, 1));
	assert_true(mb_credit_level_allows(s1->credit_word, 2));

	/* A task commit of the same client: no credit for it, and the mark stays. */
	assert_int_equal(commit(b, 1, BASE + PG, PG, 0), S_OK);
	assert_int_equal(s1->credit_word->credit_level, 1);
	assert_int_equal(s1->credit, CREDIT);

	/* Local AppDomain commits, reported: topped up again at that level. */
	assert_true(take(b, 1, 4 * PG));
	assert_int_equal(sync1(b, 1, BASE + 2 * PG, 4 * PG, 1), S_OK);
	assert_int_equal(s1->credit, CREDIT);
	assert_int_equal(word(b, 1), CREDIT);
	assert_int_equal(s1->credit_word->credit_level, 1);
	assert_int_equal(mb_section_committed(s1), 6 * PG);

	/* A process-level commit near the top: use passes 90 %, so the pressure turns Low and
	 * takes the credit out back; then credit for this client under the 100 % ceiling. */
	assert_int_equal(commit(b, 2, BASE + 54 * MIB, 6 * MIB, 2), S_OK);
	assert_int_equal(b->pressure, 1);
	assert_int_equal(s1->credit, 0);
	assert_int_equal(word(b, 1), 0);
	assert_int_equal(s2->credit, CREDIT);
	assert_int_equal(s2->credit_word->credit_level, 2);
	assert_true(l->committed <= mb_ledger_ceiling(l, 2));
	assert_int_equal(l->committed, 60 * MIB + 6 * PG + CREDIT);

	/* An AppDomain commit that fits only without that credit: it is taken back first (exact
	 * books), then granted. */
	assert_true(60 * MIB + 6 * PG + 2 * MIB <= mb_ledger_ceiling(l, 1));
	assert_true(60 * MIB + 6 * PG + 2 * MIB + CREDIT > mb_ledger_ceiling(l, 1));
	assert_int_equal(commit(b, 2, BASE + 60 * MIB, 2 * MIB, 1), S_OK);
	assert_int_equal(s1->credit, 0);
	assert_int_equal(word(b, 1), 0);
	assert_int_equal(l->committed, mb_section_committed(s1) + mb_section_committed(s2) +
					   s1->credit + s2->credit);
	assert_true(l->committed <= mb_ledger_ceiling(l, 1));

	/* Below the task rule again, a task commit's grant is for any level. */
	assert_int_equal(decommit(b, 2, BASE, 40 * MIB), S_OK);
	assert_int_equal(commit(b, 1, BASE + 32 * PG, PG, 0), S_OK);
	assert_int_equal(s1->credit, CREDIT);
	assert_int_equal(s1->credit_word->credit_level, 0);
	assert_true(mb_credit_level_allows(s1->credit_word, 0));
}

static int parked_wakes;

static void park_arm(mb_parked *p, uint32_t ms)
{
	(void)p;
	(void)ms;
}

static void park_wake(mb_parked *p)
{
	(void)p;
	parked_wakes++;
}

static void test_credit_none_while_waiting(void **state)
{
	mb_broker *b = *state;
	const uint64_t big = 62 * MIB; /* within level 1's ceiling, but not with anything else */
	mb_request req = MEMBROKER__V1__REQUEST__INIT;
	Membroker__V1__Commit m = MEMBROKER__V1__COMMIT__INIT;
	nng_msg *in = NULL, *out = NULL;
	mb_parked p;
	uint64_t credit = 1;

	open_session(b, 1, NULL);
	open_session(b, 2, NULL);
	assert_int_equal(reserve(b, 1, BASE, MIB), S_OK);
	assert_int_equal(reserve(b, 2, BASE, BUDGET), S_OK);
	assert_int_equal(commit(b, 1, BASE, 32 * PG, 0), S_OK);
	assert_int_equal(sess(b, 1)->credit, CREDIT);

	/* Session 2's commit cannot fit even with session 1's credit back: it waits. */
	assert_true(big <= mb_ledger_ceiling(&b->books.ledger, 1));
	assert_true(32 * PG + big > mb_ledger_ceiling(&b->books.ledger, 1));
	memset(&p, 0, sizeof(p));
	p.arm = park_arm;
	p.wake = park_wake;
	parked_wakes = 0;
	m.address = BASE;
	m.size = big;
	m.level = 1;
	req.request_id = ++next_request_id;
	req.body_case = MEMBROKER__V1__REQUEST__BODY_COMMIT;
	req.commit = &m;
	assert_int_equal(mb_wire_pack_request(&req, &in), 0);
	assert_int_equal(mb_dispatch_park(b, 2, nng_msg_body(in), nng_msg_len(in), &out, &p),
			 MB_DISPATCH_PARKED);
	nng_msg_free(in);
	check_ledger(b);
	assert_int_equal(b->nwaiters, 1);
	/* Unused credit went back before the commit was made to wait. */
	assert_int_equal(word(b, 1), 0);
	assert_int_equal(sess(b, 1)->credit, 0);
	assert_int_equal(b->books.credit_taken_back_bytes, CREDIT);
	assert_int_equal(b->books.ledger.committed, 32 * PG);

	/* Far under 80%, but credit would compete with the waiter. */
	assert_int_equal(commit(b, 1, BASE + 32 * PG, PG, 0), S_OK);
	assert_int_equal(sess(b, 1)->credit, 0);
	assert_int_equal(word(b, 1), 0);
	assert_int_equal(sync_req(b, 1, NULL, 0, &credit), S_OK);
	assert_int_equal(credit, 0);
	assert_int_equal(b->books.credit_total, 0);

	/* Session 1 gives its pages back: the waiter is served. */
	assert_int_equal(decommit(b, 1, BASE, 33 * PG), S_OK);
	assert_int_equal(parked_wakes, 1);
	assert_int_equal(p.state, MB_PARK_DONE);
	assert_int_equal((HRESULT)p.result, S_OK);
	assert_int_equal(b->nwaiters, 0);
	assert_int_equal(b->books.ledger.committed, big);
	assert_int_equal(mb_dispatch_finish(b, &p, false, &out), MB_DISPATCH_REPLY);
	{
		mb_response *r = mb_wire_unpack_response(nng_msg_body(out), nng_msg_len(out));
		assert_non_null(r);
		assert_int_equal(r->request_id, req.request_id);
		assert_int_equal((HRESULT)r->hresult, S_OK);
		mb_wire_free_response(r);
	}
	nng_msg_free(out);
	check_ledger(b);
}

static void test_credit_forged_word(void **state)
{
	mb_broker *b = *state;
	uint64_t revoked;
	uint32_t load;
	uint64_t avail;
	status st;

	open_session(b, 1, NULL);
	open_session(b, 2, NULL);
	assert_int_equal(reserve(b, 1, BASE, 8 * MIB), S_OK);
	assert_int_equal(reserve(b, 2, BASE, BUDGET), S_OK);
	assert_int_equal(commit(b, 1, BASE, PG, 0), S_OK);

	/* The client raises its own word: the broker believes no more than it granted. */
	forge(b, 1, UINT64_MAX - PG);
	assert_int_equal(mb_credit_unused(sess(b, 1)), CREDIT);
	assert_int_equal(session_status(b, 1, &st), S_OK);
	assert_int_equal(st.committed, PG);
	assert_int_equal(st.credit, CREDIT);
	assert_int_equal(st.total_committed, PG);
	assert_int_equal(st.total_credit, CREDIT);
	assert_int_equal(memory_load(b, 1, &load, &avail), S_OK);
	assert_int_equal(avail, avail0(PG));
	/* ... and books no local commit beyond it. */
	assert_true(take(b, 1, 4 * CREDIT));
	assert_int_equal(sync1(b, 1, BASE + PG, 4 * CREDIT, 0), E_INVALIDARG);
	assert_int_equal(b->books.ledger.committed, PG + CREDIT);

	/* Revocation returns what was granted, not what the word says. */
	revoked = b->books.credit_taken_back_bytes;
	assert_int_equal(commit(b, 2, BASE, (C0 - 1) * PG, 0), S_OK);
	assert_int_equal(b->books.credit_taken_back_bytes, revoked + CREDIT);
	assert_int_equal(word(b, 1), 0);
	assert_int_equal(sess(b, 1)->credit, 0);
	assert_int_equal(b->books.credit_total, 0);
	assert_int_equal(b->books.ledger.committed, C0 * PG);

	/* With nothing granted, a forged word is worth nothing. */
	forge(b, 1, UINT64_MAX);
	assert_int_equal(session_status(b, 1, &st), S_OK);
	assert_int_equal(st.committed, PG);
	assert_int_equal(st.credit, 0);
	assert_int_equal(st.total_committed, C0 * PG);
	assert_int_equal(sync1(b, 1, BASE + PG, PG, 0), E_INVALIDARG);
	reload_credit(b, CREDIT);
	assert_int_equal(b->books.credit_taken_back_bytes, revoked + CREDIT);
	assert_int_equal(b->books.ledger.committed, C0 * PG);

	/* Credit granted on top of a forged word: still only the grant comes back. */
	assert_int_equal(decommit(b, 2, BASE, 32 * MIB), S_OK);
	forge(b, 1, UINT64_MAX);
	assert_int_equal(commit(b, 1, BASE + PG, PG, 0), S_OK);
	assert_int_equal(sess(b, 1)->credit, CREDIT);
	revoked = b->books.credit_taken_back_bytes;
	reload_credit(b, CREDIT);
	assert_true(b->books.credit_taken_back_bytes - revoked <= CREDIT);
	assert_int_equal(sess(b, 1)->credit + (b->books.credit_taken_back_bytes - revoked), CREDIT);
	assert_int_equal(word(b, 1), 0);
	assert_int_equal(b->books.ledger.committed, mb_section_committed(sess(b, 1)) +
							sess(b, 1)->credit +
							mb_section_committed(sess(b, 2)));
}

/* The opposite lie: a word lowered to nothing claims all the credit used. */
static void test_credit_word_lowered(void **state)
{
	mb_broker *b = *state;
	uint64_t revoked;
	status st;

	open_session(b, 1, NULL);
	assert_int_equal(reserve(b, 1, BASE, 8 * MIB), S_OK);
	assert_int_equal(commit(b, 1, BASE, PG, 0), S_OK);
	forge(b, 1, 0);
	/* Counted as in use, which it may be: still within what was charged. */
	assert_int_equal(session_status(b, 1, &st), S_OK);
	assert_int_equal(st.committed, PG + CREDIT);
	assert_int_equal(st.credit, 0);
	assert_int_equal(b->books.ledger.committed, PG + CREDIT);
	/* Nothing unused to take back. */
	revoked = b->books.credit_taken_back_bytes;
	reload_credit(b, CREDIT);
	assert_int_equal(b->books.credit_taken_back_bytes, revoked);
	assert_int_equal(sess(b, 1)->credit, CREDIT);
	/* Reported, the credit becomes commits and is granted afresh. */
	assert_int_equal(sync1(b, 1, BASE + PG, CREDIT, 0), S_OK);
	assert_int_equal(mb_section_committed(sess(b, 1)), PG + CREDIT);
	assert_int_equal(sess(b, 1)->credit, CREDIT);
	assert_int_equal(word(b, 1), CREDIT);
	assert_int_equal(b->books.ledger.committed, PG + 2 * CREDIT);
}

static void test_credit_disconnect(void **state)
{
	mb_broker *b = *state;

	open_session(b, 1, NULL);
	open_session(b, 2, NULL);
	open_session(b, 3, NULL);
	assert_int_equal(reserve(b, 1, BASE, MIB), S_OK);
	assert_int_equal(reserve(b, 2, BASE, MIB), S_OK);
	assert_int_equal(commit(b, 1, BASE, 4 * PG, 0), S_OK);
	assert_int_equal(commit(b, 2, BASE, 2 * PG, 0), S_OK);
	assert_true(take(b, 1, 8 * PG)); /* local commits it will never report */
	assert_int_equal(b->books.ledger.committed, 6 * PG + 2 * CREDIT);

	goodbye(b, 1);
	check_ledger(b);
	assert_int_equal(b->books.ledger.committed, 2 * PG + CREDIT);
	assert_int_equal(b->books.credit_total, CREDIT);
	goodbye(b, 3); /* held no credit */
	assert_int_equal(b->books.ledger.committed, 2 * PG + CREDIT);
	goodbye(b, 2);
	check_ledger(b);
	assert_int_equal(b->books.ledger.committed, 0);
	assert_int_equal(b->books.credit_total, 0);
	/* Ending a session is not a revocation. */
	assert_int_equal(b->books.credit_taken_back, 0);
}

static void test_credit_reload_to_zero(void **state)
{
	mb_broker *b = *state;
	mb_response *r;
	uint64_t credit = 1;

	open_session(b, 1, NULL);
	open_session(b, 2, NULL);
	assert_int_equal(reserve(b, 1, BASE, MIB), S_OK);
	assert_int_equal(reserve(b, 2, BASE, MIB), S_OK);
	assert_int_equal(commit(b, 1, BASE, PG, 0), S_OK);
	assert_int_equal(commit(b, 2, BASE, PG, 0), S_OK);
	assert_true(take(b, 1, 8 * PG));

	reload_credit(b, 0);
	assert_int_equal(word(b, 1), 0);
	assert_int_equal(word(b, 2), 0);
	assert_int_equal(sess(b, 1)->credit, 8 * PG); /* used: charged until reported */
	assert_int_equal(sess(b, 2)->credit, 0);
	assert_int_equal(b->books.credit_total, 8 * PG);
	assert_int_equal(b->books.credit_taken_back_bytes, 2 * CREDIT - 8 * PG);
	assert_int_equal(b->books.credit_taken_back, 1);
	assert_int_equal(b->books.ledger.committed, 10 * PG);

	/* No credit announced or granted any more; reported local commits are still booked. */
	assert_int_equal(mb_broker_connect(b, 3, getpid(), getuid(), getgid()), 0);
	r = hello_v(b, 3, MB_PROTOCOL_VERSION);
	assert_int_equal((HRESULT)r->hresult, S_OK);
	assert_int_equal(r->hello->commit_credit, 0);
	mb_wire_free_response(r);
	assert_int_equal(commit(b, 1, BASE + PG, PG, 0), S_OK);
	assert_int_equal(sess(b, 1)->credit, 8 * PG);
	{
		local_commit e = {BASE + 2 * PG, 8 * PG, 0};
		assert_int_equal(sync_req(b, 1, &e, 1, &credit), S_OK);
	}
	assert_int_equal(credit, 0);
	assert_int_equal(sess(b, 1)->credit, 0);
	assert_int_equal(b->books.credit_total, 0);
	assert_int_equal(b->books.ledger.committed, 11 * PG);

	/* Configured again: granted again with the next commit. */
	reload_credit(b, CREDIT);
	assert_int_equal(commit(b, 2, BASE + PG, PG, 0), S_OK);
	assert_int_equal(sess(b, 2)->credit, CREDIT);
	assert_int_equal(word(b, 2), CREDIT);
}

static void test_credit_audit_tolerates_local_commits(void **state)
{
	mb_broker *b = *state;
	static const char page[4096] = "written";
	mb_section *s;

	open_session(b, 1, NULL);
	assert_int_equal(reserve(b, 1, BASE, MIB), S_OK);
	assert_int_equal(commit(b, 1, BASE, PG, 0), S_OK);
	s = sess(b, 1);

	/* Two pages committed and written by the client alone, not reported yet. */
	assert_true(take(b, 1, 2 * PG));
	for (uint64_t a = BASE; a < BASE + 3 * PG; a += PG)
		assert_int_equal(pwrite(s->section_fd, page, PG, (off_t)a), (ssize_t)PG);
	assert_int_equal(mb_broker_audit(b), 0);
	assert_int_equal(s->offences, 0);

	/* One page more than the credit used: that one is an offence. */
	assert_int_equal(pwrite(s->section_fd, page, PG, (off_t)(BASE + 3 * PG)), (ssize_t)PG);
	assert_int_equal(mb_broker_audit(b), PG);
	assert_int_equal(s->offences, 1);

	/* Reported, they are commits like any other. */
	assert_int_equal(sync1(b, 1, BASE + PG, 2 * PG, 0), S_OK);
	assert_int_equal(mb_broker_audit(b), 0);
	assert_int_equal(s->offences, 1);
	check_ledger(b);
}

static void test_credit_adopted_section(void **state)
{
	mb_broker *b = *state;
	uint8_t token[MB_WIRE_TOKEN_LEN];
	uint64_t id = open_session(b, 1, token);
	mb_request req = MEMBROKER__V1__REQUEST__INIT;
	Membroker__V1__AdoptDone m = MEMBROKER__V1__ADOPT_DONE__INIT;
	int fd;

	assert_int_equal(reserve(b, 1, BASE, MIB), S_OK);
	assert_int_equal(commit(b, 1, BASE, PG, 0), S_OK);
	assert_int_equal(release(b, 1, BASE), S_OK);
	assert_int_equal(b->books.ledger.committed, CREDIT); /* a release leaves the credit */

	/* The section a client brings back replaces this one: credit on the old one is void. */
	fd = mb_memfd_create("unit_dispatch", b->section_size);
	assert_true(fd >= 0);
	assert_int_equal(
	    mb_broker_adopt_section(b, id, token, MB_WIRE_TOKEN_LEN, getuid(), getpid(), fd), 0);
	check_ledger(b);
	assert_int_equal(sess(b, 1)->credit, 0);
	assert_int_equal(b->books.credit_total, 0);
	assert_int_equal(b->books.ledger.committed, 0);
	assert_int_equal(word(b, 1), 0);

	/* None while the client re-registers what it holds... */
	assert_int_equal(reserve(b, 1, BASE, MIB), S_OK);
	assert_int_equal(commit(b, 1, BASE, PG, 0), S_OK);
	assert_int_equal(sess(b, 1)->credit, 0);
	/* ... and the usual amount once it is done. */
	req.body_case = MEMBROKER__V1__REQUEST__BODY_ADOPT_DONE;
	req.adopt_done = &m;
	assert_int_equal(call_hr(b, 1, &req), S_OK);
	assert_int_equal(commit(b, 1, BASE + PG, PG, 0), S_OK);
	assert_int_equal(sess(b, 1)->credit, CREDIT);
	assert_int_equal(word(b, 1), CREDIT);
	assert_int_equal(b->books.ledger.committed, 2 * PG + CREDIT);
}

/* ---- the section registry: detach, re-attach, free ---- */

/* Hello on a new connection pipe of process pid asking for section id back with token; returns the
 * reply (free with mb_wire_free_response). */
static mb_response *resume_hello(mb_broker *b, uint32_t pipe, pid_t pid, uint64_t id,
				 const uint8_t *token)
{
	mb_request req = MEMBROKER__V1__REQUEST__INIT;
	Membroker__V1__Hello h = MEMBROKER__V1__HELLO__INIT;

	assert_int_equal(mb_broker_connect(b, pipe, pid, getuid(), getgid()), 0);
	h.protocol_version = MB_PROTOCOL_VERSION;
	h.name = "unit_dispatch";
	h.resume_session = id;
	h.resume_token.data = (uint8_t *)token;
	h.resume_token.len = MB_WIRE_TOKEN_LEN;
	req.body_case = MEMBROKER__V1__REQUEST__BODY_HELLO;
	req.hello = &h;
	return call(b, pipe, &req);
}

/* Opens a section on pipe and returns its id, with its attach token in attach. */
static uint64_t open_attachable(mb_broker *b, uint32_t pipe, uint8_t attach[MB_WIRE_TOKEN_LEN])
{
	mb_response *r;
	uint64_t id;

	assert_int_equal(mb_broker_connect(b, pipe, getpid(), getuid(), getgid()), 0);
	r = hello_v(b, pipe, MB_PROTOCOL_VERSION);
	assert_int_equal((HRESULT)r->hresult, S_OK);
	assert_false(r->hello->resumed);
	assert_int_equal(r->hello->attach_token.len, MB_WIRE_TOKEN_LEN);
	memcpy(attach, r->hello->attach_token.data, MB_WIRE_TOKEN_LEN);
	id = r->hello->session_id;
	mb_wire_free_response(r);
	return id;
}

static void test_detached_section_stays_charged(void **state)
{
	mb_broker *b = *state;
	uint8_t attach[MB_WIRE_TOKEN_LEN];
	uint64_t id = open_attachable(b, 1, attach);
	mb_section *s;

	assert_int_equal(reserve(b, 1, BASE, 32 * MIB), S_OK);
	assert_int_equal(commit(b, 1, BASE, 32 * MIB, 0), S_OK);
	/* The connection drops while the process (this one) lives: the section is detached, whole
	 * and charged, and no connection keys it. */
	mb_broker_disconnect(b, 1);
	check_ledger(b);
	s = mb_registry_section(&b->reg, id);
	assert_non_null(s);
	assert_int_equal(s->state, MB_SECTION_DETACHED);
	assert_null(s->conn);
	assert_null(mb_registry_by_pipe(&b->reg, 1));
	assert_int_equal(b->books.ledger.committed, 32 * MIB);
	assert_int_equal(b->reg.conns, 0);
	assert_int_equal(b->reg.sections, 1);

	/* Others see the budget with its charge in: of 64 MiB, level 0 may use 57.6; 25 are left.
	 */
	open_session(b, 2, NULL);
	assert_int_equal(reserve(b, 2, BASE, 32 * MIB), S_OK);
	assert_int_equal(commit(b, 2, BASE, 32 * MIB, 0), E_OUTOFMEMORY);
	assert_int_equal(commit(b, 2, BASE, 16 * MIB, 0), S_OK);
	check_ledger(b);

	/* The owner exits while detached: the section is freed at once. */
	mb_broker_process_exited(b, id);
	assert_null(mb_registry_section(&b->reg, id));
	assert_int_equal(b->books.ledger.committed, 16 * MIB);
	check_ledger(b);
}

static void test_reattach(void **state)
{
	mb_broker *b = *state;
	uint8_t attach[MB_WIRE_TOKEN_LEN], next[MB_WIRE_TOKEN_LEN];
	uint64_t id = open_attachable(b, 1, attach);
	mb_response *r;
	status st;

	assert_int_equal(reserve(b, 1, BASE, 4 * MIB), S_OK);
	assert_int_equal(commit(b, 1, BASE, 2 * MIB, 2), S_OK);
	mb_broker_disconnect(b, 1);

	/* Back on another connection with the token: the same section, its books untouched, and
	 * a new token. Nothing was re-sent and nothing charged again. */
	r = resume_hello(b, 2, getpid(), id, attach);
	assert_int_equal((HRESULT)r->hresult, S_OK);
	assert_true(r->hello->resumed);
	assert_int_equal(r->hello->session_id, id);
	assert_int_equal(r->hello->attach_token.len, MB_WIRE_TOKEN_LEN);
	memcpy(next, r->hello->attach_token.data, MB_WIRE_TOKEN_LEN);
	assert_memory_not_equal(next, attach, MB_WIRE_TOKEN_LEN);
	/* No second hand-over token: the client has its section already. */
	assert_int_equal(r->hello->fd_token.len, 0);
	mb_wire_free_response(r);
	assert_int_equal(mb_registry_section(&b->reg, id)->state, MB_SECTION_ATTACHED);
	assert_int_equal(session_status(b, 2, &st), S_OK);
	assert_int_equal(st.committed, 2 * MIB);
	assert_int_equal(st.reservations, 1);
	assert_int_equal(st.sessions, 1);
	assert_int_equal(b->books.ledger.committed, 2 * MIB);
	/* It carries on where it was: the old reservation is there, the pages committed. */
	assert_int_equal(commit(b, 2, BASE + 2 * MIB, MIB, 0), S_OK);
	assert_int_equal(decommit(b, 2, BASE, MIB), S_OK);
	assert_int_equal(b->books.ledger.committed, 2 * MIB);

	/* Drop again: the old token is spent (a replay is refused and gets a new, empty section of
	 * its own); the new one works, once. */
	mb_broker_disconnect(b, 2);
	r = resume_hello(b, 3, getpid(), id, attach);
	assert_int_equal((HRESULT)r->hresult, S_OK);
	assert_false(r->hello->resumed);
	assert_int_not_equal(r->hello->session_id, id);
	mb_wire_free_response(r);
	assert_int_equal(mb_registry_section(&b->reg, id)->state, MB_SECTION_DETACHED);
	r = resume_hello(b, 4, getpid(), id, next);
	assert_true(r->hello->resumed);
	mb_wire_free_response(r);
	mb_broker_disconnect(b, 4);
	r = resume_hello(b, 5, getpid(), id, next);
	assert_false(r->hello->resumed);
	mb_wire_free_response(r);
	check_ledger(b);
	assert_int_equal(b->books.ledger.committed, 2 * MIB);
}

static void test_reattach_refusals(void **state)
{
	mb_broker *b = *state;
	uint8_t attach[MB_WIRE_TOKEN_LEN], wrong[MB_WIRE_TOKEN_LEN];
	uint64_t id = open_attachable(b, 1, attach);
	mb_response *r;

	assert_int_equal(reserve(b, 1, BASE, MIB), S_OK);
	assert_int_equal(commit(b, 1, BASE, MIB, 0), S_OK);
	/* Attached: nobody else takes it over with the right token, nor the owner without it. */
	memcpy(wrong, attach, sizeof(wrong));
	wrong[0] ^= 1;
	r = resume_hello(b, 2, getpid() + 1, id, attach);
	assert_false(r->hello->resumed);
	mb_wire_free_response(r);
	r = resume_hello(b, 7, getpid(), id, wrong);
	assert_false(r->hello->resumed);
	mb_wire_free_response(r);
	assert_int_equal(mb_registry_section(&b->reg, id)->conn->pipe_id, 1);

	mb_broker_disconnect(b, 1);
	/* Detached: a wrong token, another process with the right one, an unknown id. */
	r = resume_hello(b, 3, getpid(), id, wrong);
	assert_false(r->hello->resumed);
	mb_wire_free_response(r);
	r = resume_hello(b, 4, getpid() + 1, id, attach);
	assert_false(r->hello->resumed);
	mb_wire_free_response(r);
	r = resume_hello(b, 5, getpid(), id + 1000, attach);
	assert_false(r->hello->resumed);
	mb_wire_free_response(r);
	/* None of them burnt the owner's token, and the books never moved. */
	assert_int_equal(b->books.ledger.committed, MIB);
	r = resume_hello(b, 6, getpid(), id, attach);
	assert_true(r->hello->resumed);
	memcpy(attach, r->hello->attach_token.data, MB_WIRE_TOKEN_LEN);
	mb_wire_free_response(r);
	check_ledger(b);

	/* Its owner may move it from a connection it gave up as lost to a new one, or re-attach on
	 * the same connection; the connection that lost it has no session any more. */
	r = resume_hello(b, 8, getpid(), id, attach);
	assert_true(r->hello->resumed);
	memcpy(attach, r->hello->attach_token.data, MB_WIRE_TOKEN_LEN);
	mb_wire_free_response(r);
	assert_int_equal(mb_registry_section(&b->reg, id)->conn->pipe_id, 8);
	assert_int_equal(reserve(b, 6, BASE + 8 * MIB, MIB), HOST_E_CLRNOTAVAILABLE);
	{
		mb_request req = MEMBROKER__V1__REQUEST__INIT;
		Membroker__V1__Hello h = MEMBROKER__V1__HELLO__INIT;
		h.protocol_version = MB_PROTOCOL_VERSION;
		h.resume_session = id;
		h.resume_token.data = attach;
		h.resume_token.len = MB_WIRE_TOKEN_LEN;
		req.body_case = MEMBROKER__V1__REQUEST__BODY_HELLO;
		req.hello = &h;
		r = call(b, 8, &req);
		assert_int_equal((HRESULT)r->hresult, S_OK);
		assert_true(r->hello->resumed);
		mb_wire_free_response(r);
		/* ... but a plain second Hello on it is still a protocol error. */
		h.resume_session = 0;
		assert_int_equal(call_hr(b, 8, &req), E_FAIL);
	}
	assert_int_equal(b->books.ledger.committed, MIB);
	check_ledger(b);
}

static void test_goodbye_frees_at_once(void **state)
{
	mb_broker *b = *state;
	uint8_t attach[MB_WIRE_TOKEN_LEN];
	uint64_t id = open_attachable(b, 1, attach);
	mb_response *r;

	assert_int_equal(reserve(b, 1, BASE, MIB), S_OK);
	assert_int_equal(commit(b, 1, BASE, MIB, 0), S_OK);
	goodbye(b, 1);
	assert_null(mb_registry_section(&b->reg, id));
	assert_int_equal(b->books.ledger.committed, 0);
	r = resume_hello(b, 2, getpid(), id, attach);
	assert_false(r->hello->resumed);
	mb_wire_free_response(r);
	check_ledger(b);
}

/* ---- re-adoption without a store: claims and their booking (daemon/readopt.h) ---- */

/* The part of the last claim refused at once (size 0: none). */
static uint64_t cut_address, cut_size;

/* A claim (Commit.adopt) of [address, address+size) at level. */
static HRESULT claim(mb_broker *b, uint32_t pipe, uint64_t address, uint64_t size, uint32_t level)
{
	mb_request req = MEMBROKER__V1__REQUEST__INIT;
	Membroker__V1__Commit m = MEMBROKER__V1__COMMIT__INIT;
	mb_response *r;
	HRESULT hr;

	m.address = address;
	m.size = size;
	m.level = level;
	m.adopt = true;
	req.body_case = MEMBROKER__V1__REQUEST__BODY_COMMIT;
	req.commit = &m;
	r = call(b, pipe, &req);
	hr = (HRESULT)r->hresult;
	cut_address = cut_size = 0;
	if (r->body_case == MEMBROKER__V1__RESPONSE__BODY_ADOPT_DONE) {
		assert_int_equal(hr, S_OK);
		assert_int_equal(r->adopt_done->n_refused, 1);
		cut_address = r->adopt_done->refused[0]->address;
		cut_size = r->adopt_done->refused[0]->size;
	}
	mb_wire_free_response(r);
	return hr;
}

/* What one AdoptDone answered. */
typedef struct adopt_reply {
	uint64_t booked, refused_bytes;
	size_t n;
	uint64_t address[MB_WIRE_MAX_REFUSED], size[MB_WIRE_MAX_REFUSED];
	bool more;
} adopt_reply;

static HRESULT adopt_done(mb_broker *b, uint32_t pipe, adopt_reply *out)
{
	mb_request req = MEMBROKER__V1__REQUEST__INIT;
	Membroker__V1__AdoptDone m = MEMBROKER__V1__ADOPT_DONE__INIT;
	mb_response *r;
	HRESULT hr;

	memset(out, 0, sizeof(*out));
	req.body_case = MEMBROKER__V1__REQUEST__BODY_ADOPT_DONE;
	req.adopt_done = &m;
	r = call(b, pipe, &req);
	hr = (HRESULT)r->hresult;
	if (hr == S_OK) {
		assert_int_equal(r->body_case, MEMBROKER__V1__RESPONSE__BODY_ADOPT_DONE);
		out->booked = r->adopt_done->booked;
		out->refused_bytes = r->adopt_done->refused_bytes;
		out->more = r->adopt_done->more;
		out->n = r->adopt_done->n_refused;
		assert_true(out->n <= MB_WIRE_MAX_REFUSED);
		for (size_t i = 0; i < out->n; i++) {
			out->address[i] = r->adopt_done->refused[i]->address;
			out->size[i] = r->adopt_done->refused[i]->size;
		}
	}
	mb_wire_free_response(r);
	return hr;
}

/* pipe's section replaced by a memfd of the test's (the client's section from before a restart).
 * Returns the test's own descriptor of it. */
static int hand_back(mb_broker *b, uint32_t pipe)
{
	uint8_t token[MB_WIRE_TOKEN_LEN];
	uint64_t id = open_session(b, pipe, token);
	int fd = mb_memfd_create("unit_dispatch", b->section_size);

	assert_true(fd >= 0);
	int mine = dup(fd);
	assert_true(mine >= 0);
	assert_int_equal(
	    mb_broker_adopt_section(b, id, token, MB_WIRE_TOKEN_LEN, getuid(), getpid(), fd), 0);
	assert_true(sess(b, pipe)->adopting);
	return mine;
}

/* Writes one byte into every page of [address, address+size) of the memfd: data it holds. */
static void write_pages(int fd, uint64_t address, uint64_t size)
{
	for (uint64_t a = address; a < address + size; a += PG)
		assert_int_equal(pwrite(fd, "d", 1, (off_t)a), 1);
}

/* Level (-1: not committed) of the page at address in pipe's books. */
static int page_level(mb_broker *b, uint32_t pipe, uint64_t address)
{
	mb_region *r = mb_regmap_find(&sess(b, pipe)->map, (uintptr_t)address);

	assert_non_null(r);
	uint8_t st = mb_region_state(r, mb_region_page(r, (uintptr_t)address));
	return (st & MB_PAGE_COMMITTED) ? mb_page_level(st) : -1;
}

/* Adoption cannot lie: a claim needs a registered reservation and room in the quotas, is booked
 * nothing before AdoptDone, and a forged memfd's data gains nothing. */
static void test_adopt_claims_bounded(void **state)
{
	mb_broker *b = *state;
	uint8_t token[MB_WIRE_TOKEN_LEN];

	/* Not before a section was handed back. */
	open_session(b, 2, token);
	assert_int_equal(reserve(b, 2, BASE, MIB), S_OK);
	assert_int_equal(claim(b, 2, BASE, PG, 2), E_INVALIDARG);

	/* A memfd the client made itself, with data written past the budget. */
	int fd = hand_back(b, 1);
	write_pages(fd, BASE, PG);
	write_pages(fd, BASE + BUDGET + PG, PG);
	assert_int_equal(reserve(b, 1, BASE, BUDGET * 4), S_OK);
	/* Outside every reservation it registered: refused, nothing claimed. */
	assert_int_equal(claim(b, 1, BASE + BUDGET * 8, PG, 2), MB_E_INVALID_ADDRESS);
	assert_int_equal(sess(b, 1)->claimed_pages, 0);
	/* Twice the budget at eProcessCritical: the first budget's worth is claimed, the rest
	 * refused at once and its pages punched out. */
	assert_int_equal(claim(b, 1, BASE, BUDGET * 2, 2), S_OK);
	assert_int_equal(cut_address, BASE + BUDGET);
	assert_int_equal(cut_size, BUDGET);
	off_t d = lseek(fd, (off_t)(BASE + BUDGET), SEEK_DATA);
	assert_true(d < 0 || (uint64_t)d >= BASE + 2 * BUDGET);
	char c = 0;
	assert_int_equal(pread(fd, &c, 1, (off_t)BASE), 1);
	assert_int_equal(c, 'd');
	assert_int_equal(sess(b, 1)->claimed_pages, BUDGET / PG);
	/* Nothing more fits what it may ever hold: refused whole. The same pages again add
	 * nothing. */
	assert_int_equal(claim(b, 1, BASE + BUDGET, PG, 2), E_OUTOFMEMORY);
	assert_non_null(strstr(last_detail, "refused"));
	assert_int_equal(claim(b, 1, BASE, PG, 2), S_OK);
	assert_int_equal(cut_size, 0);
	/* Nothing is booked before AdoptDone. */
	assert_int_equal(b->books.ledger.committed, 0);
	adopt_reply ar;
	assert_int_equal(adopt_done(b, 1, &ar), S_OK);
	assert_int_equal(ar.booked, BUDGET);
	assert_int_equal(ar.refused_bytes, 0);
	assert_int_equal(ar.n, 0);
	assert_false(sess(b, 1)->adopting);
	assert_int_equal(b->books.ledger.committed, BUDGET);
	/* Claims after it are not re-registration any more. */
	assert_int_equal(claim(b, 1, BASE + BUDGET, PG, 2), E_INVALIDARG);

	/* Under client_max: what it holds and claims stays within it; then the budget, full,
	 * books none of it. */
	b->conf.client_max = 8 * MIB;
	int fd3 = hand_back(b, 3);
	assert_int_equal(reserve(b, 3, BASE, 16 * MIB), S_OK);
	assert_int_equal(claim(b, 3, BASE, 8 * MIB + PG, 0), S_OK);
	assert_int_equal(cut_address, BASE + 8 * MIB);
	assert_int_equal(cut_size, PG);
	assert_int_equal(claim(b, 3, BASE + 8 * MIB, PG, 0), E_OUTOFMEMORY);
	assert_int_equal(adopt_done(b, 3, &ar), S_OK);
	assert_int_equal(ar.booked, 0);
	assert_int_equal(ar.refused_bytes, 8 * MIB);
	assert_int_equal(ar.n, 1);
	assert_int_equal(ar.address[0], BASE);
	assert_int_equal(ar.size[0], 8 * MIB);
	check_ledger(b);
	close(fd);
	close(fd3);
}

/* The pages the section really holds are booked first, the holes after; what does not fit is
 * refused, punched and reported, never booked over the budget. */
static void test_adopt_books_data_first(void **state)
{
	mb_broker *b = *state;
	adopt_reply ar;

	/* Another client holds half the budget. */
	open_session(b, 2, NULL);
	assert_int_equal(reserve(b, 2, BASE, BUDGET / 2), S_OK);
	assert_int_equal(commit(b, 2, BASE, BUDGET / 2, 0), S_OK);

	/* The returning client claims the whole budget at eProcessCritical, in one run whose
	 * data lies in the middle: [16, 32) MiB of [0, 64) MiB. */
	int fd = hand_back(b, 1);
	assert_int_equal(reserve(b, 1, BASE, BUDGET), S_OK);
	write_pages(fd, BASE + 16 * MIB, 16 * MIB);
	assert_int_equal(claim(b, 1, BASE, BUDGET, 2), S_OK);
	assert_int_equal(b->books.ledger.committed, BUDGET / 2);
	assert_int_equal(adopt_done(b, 1, &ar), S_OK);
	/* Its data first (16 MiB), then the first 16 MiB of holes; 32 MiB refused. */
	assert_int_equal(ar.booked, BUDGET / 2);
	assert_int_equal(ar.refused_bytes, BUDGET / 2);
	assert_false(ar.more);
	assert_int_equal(ar.n, 1);
	assert_int_equal(ar.address[0], BASE + 32 * MIB);
	assert_int_equal(ar.size[0], 32 * MIB);
	check_ledger(b);
	assert_int_equal(b->books.ledger.committed, BUDGET);
	assert_int_equal(page_level(b, 1, BASE), 2);
	assert_int_equal(page_level(b, 1, BASE + 16 * MIB), 2);
	assert_int_equal(page_level(b, 1, BASE + 32 * MIB), -1);
	/* The data survived; the refused range holds nothing. */
	char c = 0;
	assert_int_equal(pread(fd, &c, 1, (off_t)(BASE + 20 * MIB)), 1);
	assert_int_equal(c, 'd');
	off_t d = lseek(fd, (off_t)(BASE + 32 * MIB), SEEK_DATA);
	assert_true(d < 0 || (uint64_t)d >= BASE + BUDGET);
	/* Told once: the marks are gone. */
	assert_int_equal(adopt_done(b, 1, &ar), S_OK);
	assert_int_equal(ar.n, 0);
	assert_int_equal(ar.booked, 0);
	close(fd);
}
/* Each claim is booked at its own level, through that level's ceiling, the highest level first;
 * the books keep each page's level. */
static void test_adopt_books_at_levels(void **state)
{
	mb_broker *b = *state;
	adopt_reply ar;
	int fd = hand_back(b, 1);

	assert_int_equal(reserve(b, 1, BASE, BUDGET), S_OK);
	/* 40 MiB at eTaskCritical below 24 MiB at eProcessCritical, all holes, and 8 pages of
	 * data at eAppDomainCritical. */
	assert_int_equal(claim(b, 1, BASE, 40 * MIB - 8 * PG, 0), S_OK);
	assert_int_equal(claim(b, 1, BASE + 40 * MIB - 8 * PG, 8 * PG, 1), S_OK);
	write_pages(fd, BASE + 40 * MIB - 8 * PG, 8 * PG);
	assert_int_equal(claim(b, 1, BASE + 40 * MIB, 24 * MIB, 2), S_OK);
	assert_int_equal(adopt_done(b, 1, &ar), S_OK);
	/* Data (AppDomain) and ProcessCritical fit whole; the task claims only up to the task
	 * ceiling, their first pages. */
	uint64_t task = avail0(24 * MIB + 8 * PG);
	assert_int_equal(ar.booked, 24 * MIB + 8 * PG + task);
	assert_int_equal(ar.refused_bytes, 40 * MIB - 8 * PG - task);
	assert_int_equal(ar.n, 1);
	assert_int_equal(ar.address[0], BASE + task);
	check_ledger(b);
	assert_int_equal(page_level(b, 1, BASE), 0);
	assert_int_equal(page_level(b, 1, BASE + task - PG), 0);
	assert_int_equal(page_level(b, 1, BASE + task), -1);
	assert_int_equal(page_level(b, 1, BASE + 40 * MIB - PG), 1);
	assert_int_equal(page_level(b, 1, BASE + 40 * MIB), 2);
	assert_int_equal(page_level(b, 1, BASE + BUDGET - PG), 2);
	/* A later commit of pages committed already keeps their level; new ones take theirs. */
	assert_int_equal(commit(b, 1, BASE + 40 * MIB - PG, 2 * PG, 0), S_OK);
	assert_int_equal(page_level(b, 1, BASE + 40 * MIB - PG), 1);
	assert_int_equal(page_level(b, 1, BASE + 40 * MIB), 2);
	close(fd);
}

/* More refused ranges than one reply holds: listed over several AdoptDone replies. */
static void test_adopt_refused_listed_in_parts(void **state)
{
	mb_broker *b = *state;
	adopt_reply ar;
	const size_t claims = MB_WIRE_MAX_REFUSED + 36;

	/* Another client holds the whole budget: nothing can be booked. */
	open_session(b, 2, NULL);
	assert_int_equal(reserve(b, 2, BASE, BUDGET), S_OK);
	assert_int_equal(commit(b, 2, BASE, BUDGET, 2), S_OK);
	int fd = hand_back(b, 1);
	assert_int_equal(reserve(b, 1, BASE, MIB), S_OK);
	for (size_t i = 0; i < claims; i++)
		assert_int_equal(claim(b, 1, BASE + 2 * i * PG, PG, (uint32_t)(i % 3)), S_OK);
	assert_int_equal(adopt_done(b, 1, &ar), S_OK);
	assert_int_equal(ar.booked, 0);
	assert_int_equal(ar.refused_bytes, claims * PG);
	assert_int_equal(ar.n, MB_WIRE_MAX_REFUSED);
	assert_true(ar.more);
	for (size_t i = 0; i < ar.n; i++) {
		assert_int_equal(ar.address[i], BASE + 2 * i * PG);
		assert_int_equal(ar.size[i], PG);
	}
	assert_int_equal(adopt_done(b, 1, &ar), S_OK);
	assert_int_equal(ar.n, claims - MB_WIRE_MAX_REFUSED);
	assert_false(ar.more);
	assert_int_equal(ar.address[0], BASE + 2 * MB_WIRE_MAX_REFUSED * PG);
	/* Nothing of it left in the books: no page state, nothing charged. */
	assert_int_equal(sess(b, 1)->map.committed_pages, 0);
	assert_null(mb_regmap_find(&sess(b, 1)->map, BASE)->chunks[0]);
	check_ledger(b);
	close(fd);
}

/* A client that never says AdoptDone has its claims booked at the deadline, and is audited. */
static void test_adopt_deadline_books_claims(void **state)
{
	mb_broker *b = *state;
	int fd = hand_back(b, 1);

	assert_int_equal(reserve(b, 1, BASE, MIB), S_OK);
	write_pages(fd, BASE, MIB);
	assert_int_equal(claim(b, 1, BASE, MIB / 2, 1), S_OK);
	assert_int_equal(mb_broker_audit(b), 0);
	assert_true(sess(b, 1)->adopting); /* not yet */
	sess(b, 1)->adopt_deadline_ms = 0;
	mb_broker_audit(b);
	assert_false(sess(b, 1)->adopting);
	assert_int_equal(b->books.ledger.committed, MIB / 2);
	assert_int_equal(page_level(b, 1, BASE), 1);
	/* The unclaimed half the section held is gone (forgiven: no offence). */
	off_t d = lseek(fd, (off_t)(BASE + MIB / 2), SEEK_DATA);
	assert_true(d < 0 || (uint64_t)d >= BASE + MIB);
	assert_int_equal(sess(b, 1)->offences, 0);
	check_ledger(b);
	close(fd);
}

/* A connection whose end nng never reports goes once its process exited and it holds no section. */
static void test_sweep_forgets_dead_connections(void **state)
{
	mb_broker *b = *state;
	pid_t child = fork();

	assert_true(child >= 0);
	if (child == 0) {
		pause();
		_exit(0);
	}
	assert_int_equal(mb_broker_connect(b, 1, child, getuid(), getgid()), 0);
	open_session(b, 2, NULL);
	mb_broker_sweep_exited(b);
	assert_int_equal(b->reg.conns, 2); /* both processes live */
	kill(child, SIGKILL);
	assert_int_equal(waitpid(child, NULL, 0), child);
	mb_broker_sweep_exited(b);
	assert_null(mb_registry_conn(&b->reg, 1));
	assert_non_null(mb_registry_conn(&b->reg, 2));
	assert_int_equal(b->reg.conns, 1);
	mb_broker_disconnect(b, 1); /* reported late after all: a no-op */
	assert_int_equal(b->reg.conns, 1);
}

#define T(fn)  cmocka_unit_test_setup_teardown(fn, setup, teardown)
#define TC(fn) cmocka_unit_test_setup_teardown(fn, setup_credit, teardown)

int main(void)
{
	const struct CMUnitTest tests[] = {
	    T(test_request_before_hello),
	    T(test_hello_wrong_version),
	    T(test_hello_ok),
	    T(test_hello_twice),
	    T(test_reserve),
	    T(test_commit_refusals),
	    T(test_commit_over_budget),
	    T(test_commit_same_pages_twice),
	    T(test_decommit_credits),
	    T(test_reset_of_reserved_pages_changes_nothing),
	    T(test_release),
	    T(test_not_owner),
	    T(test_unknown_pipe),
	    T(test_unknown_pipe_hello),
	    T(test_garbage),
	    T(test_reply_reused),
	    T(test_disconnect_returns_everything),
	    T(test_status_and_load),
	    T(test_handover),
	    T(test_handover_wrong_token_burns),
	    T(test_handover_wrong_peer_does_not_burn),
	    TC(test_credit_hello),
	    TC(test_credit_first_commit_tops_up),
	    TC(test_credit_sync_books_local_commits),
	    TC(test_credit_sync_refusals),
	    TC(test_reserve_credit),
	    TC(test_credit_sync_frees),
	    T(test_reserve_credit_off),
	    TC(test_credit_revoked_for_commit),
	    TC(test_credit_revoked_on_low),
	    TC(test_credit_limit_80_percent),
	    TC(test_credit_per_level),
	    TC(test_credit_none_while_waiting),
	    TC(test_credit_forged_word),
	    TC(test_credit_word_lowered),
	    TC(test_credit_disconnect),
	    TC(test_credit_reload_to_zero),
	    TC(test_credit_audit_tolerates_local_commits),
	    TC(test_credit_adopted_section),
	    T(test_detached_section_stays_charged),
	    T(test_reattach),
	    T(test_reattach_refusals),
	    T(test_goodbye_frees_at_once),
	    T(test_adopt_claims_bounded),
	    T(test_adopt_books_data_first),
	    T(test_adopt_books_at_levels),
	    T(test_adopt_refused_listed_in_parts),
	    T(test_adopt_deadline_books_claims),
	    T(test_sweep_forgets_dead_connections),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
