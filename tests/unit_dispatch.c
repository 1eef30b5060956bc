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
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "broker.h"
#include "dispatch.h"
#include "mb_regmap.h"
#include "mb_win32.h"
#include "mb_wire.h"

#define MIB    (1024ULL * 1024ULL)
#define BUDGET (64 * MIB)
#define PG     ((uint64_t)MB_PAGE_SIZE)
#define GR     ((uint64_t)MB_GRANULARITY)
#define BASE   ((uint64_t)0x10000000)

/* The answer to any request but Hello before Hello: no session on this connection, connect again. */
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
	assert_int_equal(b->ledger.committed, mb_broker_sum_sessions(b));
	assert_true(b->ledger.committed <= b->ledger.budget);
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
	}
	mb_wire_free_response(r);
	return hr;
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
	assert_int_equal(b->ledger.committed, 0);
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
	id1 = r->hello->session_id;
	memcpy(t1, r->hello->fd_token.data, MB_WIRE_TOKEN_LEN);
	mb_wire_free_response(r);

	/* Another session: another id and another token. */
	assert_int_not_equal(open_session(b, 2, t2), id1);
	assert_memory_not_equal(t1, t2, MB_WIRE_TOKEN_LEN);
	assert_int_equal(b->sessions, 2);
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
	assert_int_equal(b->ledger.committed, 0);
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
	assert_int_equal(b->ledger.committed, 0);
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
	assert_int_equal(b->ledger.committed, 0);
	assert_int_equal(commit(b, 1, BASE, (c0 + 1) * PG, 0), E_OUTOFMEMORY);
	assert_int_equal(b->ledger.committed, 0);

	/* Exactly what level 0 may have. */
	assert_int_equal(commit(b, 1, BASE, c0 * PG, 0), S_OK);
	assert_int_equal(b->ledger.committed, c0 * PG);
	assert_int_equal(commit(b, 1, BASE + c0 * PG, PG, 0), E_OUTOFMEMORY);
	assert_int_equal(b->ledger.committed, c0 * PG);
	assert_int_equal(memory_load(b, 1, &load, &avail), S_OK);
	assert_int_equal(load, 90); /* 89.99...% rounds up */
	assert_int_equal(avail, avail0(c0 * PG));
	assert_int_equal(avail, 0);

	/* AppDomain level goes on to 97%. */
	assert_int_equal(commit(b, 1, BASE + c0 * PG, (c1 - c0 + 1) * PG, 1), E_OUTOFMEMORY);
	assert_int_equal(b->ledger.committed, c0 * PG);
	assert_int_equal(commit(b, 1, BASE + c0 * PG, (c1 - c0) * PG, 1), S_OK);
	assert_int_equal(b->ledger.committed, c1 * PG);

	/* Process level gets all of it, and not a page more. */
	assert_int_equal(commit(b, 1, BASE + c1 * PG, (all - c1) * PG, 2), S_OK);
	assert_int_equal(b->ledger.committed, BUDGET);
	assert_int_equal(commit(b, 1, BASE + all * PG, PG, 2), E_OUTOFMEMORY);
	assert_int_equal(b->ledger.committed, BUDGET);
	assert_int_equal(memory_load(b, 1, &load, &avail), S_OK);
	assert_int_equal(load, 100);
	assert_int_equal(avail, 0);

	/* Re-committing committed pages costs nothing, so it succeeds even when full. */
	assert_int_equal(commit(b, 1, BASE, BUDGET, 0), S_OK);
	assert_int_equal(b->ledger.committed, BUDGET);
}

static void test_commit_same_pages_twice(void **state)
{
	mb_broker *b = *state;
	status st;

	open_session(b, 1, NULL);
	assert_int_equal(reserve(b, 1, BASE, MIB), S_OK);
	assert_int_equal(commit(b, 1, BASE, 16 * PG, 0), S_OK);
	assert_int_equal(b->ledger.committed, 16 * PG);
	assert_int_equal(commit(b, 1, BASE, 16 * PG, 0), S_OK);
	assert_int_equal(b->ledger.committed, 16 * PG);
	assert_int_equal(commit(b, 1, BASE + 4 * PG, 4 * PG, 2), S_OK);
	assert_int_equal(b->ledger.committed, 16 * PG);
	/* Half old, half new: only the new half is charged. */
	assert_int_equal(commit(b, 1, BASE + 8 * PG, 16 * PG, 0), S_OK);
	assert_int_equal(b->ledger.committed, 24 * PG);
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
	assert_int_equal(b->ledger.committed, 32 * PG);
	assert_int_equal(decommit(b, 1, BASE + 8 * PG, 4 * PG), S_OK);
	assert_int_equal(b->ledger.committed, 28 * PG);
	/* Decommitting decommitted pages credits nothing more. */
	assert_int_equal(decommit(b, 1, BASE + 8 * PG, 4 * PG), S_OK);
	assert_int_equal(b->ledger.committed, 28 * PG);
	/* A range of mixed pages credits only the committed ones. */
	assert_int_equal(decommit(b, 1, BASE + 30 * PG, 10 * PG), S_OK);
	assert_int_equal(b->ledger.committed, 26 * PG);
	/* Refusals leave the ledger alone. */
	assert_int_equal(decommit(b, 1, BASE + 64 * MIB, PG), HOST_E_INVALIDOPERATION);
	assert_int_equal(decommit(b, 1, BASE + MIB - PG, 2 * PG), MB_E_INVALID_ADDRESS);
	assert_int_equal(decommit(b, 1, BASE + 1, PG), E_INVALIDARG);
	assert_int_equal(b->ledger.committed, 26 * PG);
	/* The whole reservation. */
	assert_int_equal(decommit(b, 1, BASE, MIB), S_OK);
	assert_int_equal(b->ledger.committed, 0);
	/* Committed again after a decommit: charged again. */
	assert_int_equal(commit(b, 1, BASE, 2 * PG, 0), S_OK);
	assert_int_equal(b->ledger.committed, 2 * PG);
}

static void test_reset_needs_commit(void **state)
{
	mb_broker *b = *state;

	open_session(b, 1, NULL);
	assert_int_equal(reserve(b, 1, BASE, MIB), S_OK);
	assert_int_equal(reset(b, 1, BASE, PG, false), MB_E_INVALID_ADDRESS);
	assert_int_equal(reset(b, 1, BASE, PG, true), MB_E_INVALID_ADDRESS);
	assert_int_equal(commit(b, 1, BASE, 4 * PG, 0), S_OK);
	assert_int_equal(reset(b, 1, BASE, 8 * PG, false), MB_E_INVALID_ADDRESS);
	assert_int_equal(reset(b, 1, BASE, 4 * PG, false), S_OK);
	/* Reset pages stay charged until the broker discards them. */
	assert_int_equal(b->ledger.committed, 4 * PG);
	assert_int_equal(reset(b, 1, BASE, 4 * PG, true), S_OK);
	assert_int_equal(b->ledger.committed, 4 * PG);
	assert_int_equal(reset(b, 1, BASE + 64 * MIB, PG, false), MB_E_INVALID_ADDRESS);
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
	assert_int_equal(b->ledger.committed, 8 * PG);

	assert_int_equal(release(b, 1, BASE), S_OK);
	assert_int_equal(b->ledger.committed, 0);
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
	assert_int_equal(b->ledger.committed, 4 * PG);
	assert_int_equal(release(b, 1, BASE), S_OK);
	assert_int_equal(b->ledger.committed, 0);
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
	assert_int_equal(b->sessions, 0);
	assert_int_equal(b->ledger.committed, 0);
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
		assert_int_equal(b->sessions, 0);
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
	assert_int_equal(b->sessions, 0);
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
	assert_int_equal(b->ledger.committed, 6 * MIB + 64 * PG);
	assert_int_equal(session_status(b, 2, &st), S_OK);
	assert_int_equal(st.sessions, 2);
	assert_int_equal(st.committed, 2 * MIB);
	assert_int_equal(st.total_committed, 6 * MIB + 64 * PG);

	mb_broker_disconnect(b, 1);
	check_ledger(b);
	assert_int_equal(b->ledger.committed, 2 * MIB);
	assert_int_equal(b->sessions, 1);
	assert_int_equal(session_status(b, 2, &st), S_OK);
	assert_int_equal(st.sessions, 1);
	assert_int_equal(st.total_committed, 2 * MIB);
	/* The ended session's pipe is unknown now. */
	assert_int_equal(reserve(b, 1, BASE, GR), HOST_E_CLRNOTAVAILABLE);

	/* Unknown pipes and repeated disconnects are no-ops. */
	mb_broker_disconnect(b, 1);
	mb_broker_disconnect(b, 12345);
	assert_int_equal(b->sessions, 1);
	check_ledger(b);

	/* A session that never said Hello ends cleanly too. */
	assert_int_equal(mb_broker_connect(b, 3, getpid(), getuid(), getgid()), 0);
	assert_int_equal(b->sessions, 2);
	mb_broker_disconnect(b, 3);
	assert_int_equal(b->sessions, 1);

	mb_broker_disconnect(b, 2);
	check_ledger(b);
	assert_int_equal(b->ledger.committed, 0);
	assert_int_equal(b->sessions, 0);
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

static void test_handover_wrong_peer_burns(void **state)
{
	mb_broker *b = *state;
	uint8_t t1[MB_WIRE_TOKEN_LEN], t2[MB_WIRE_TOKEN_LEN], t3[MB_WIRE_TOKEN_LEN];
	uint64_t id1 = open_session(b, 1, t1);
	uint64_t id2 = open_session(b, 2, t2);
	uint64_t id3 = open_session(b, 3, t3);
	int fd;

	/* Right token from another uid, then from another pid: refused and burnt. */
	assert_int_equal(mb_broker_handover(b, id1, t1, MB_WIRE_TOKEN_LEN, getuid() + 1, getpid()),
			 -EPERM);
	assert_int_equal(mb_broker_handover(b, id1, t1, MB_WIRE_TOKEN_LEN, getuid(), getpid()),
			 -EPERM);
	assert_int_equal(mb_broker_handover(b, id2, t2, MB_WIRE_TOKEN_LEN, getuid(), getpid() + 1),
			 -EPERM);
	assert_int_equal(mb_broker_handover(b, id2, t2, MB_WIRE_TOKEN_LEN, getuid(), getpid()),
			 -EPERM);
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
		mb_broker_disconnect(b, 6);
		assert_int_equal(
		    mb_broker_handover(b, id6, t6, MB_WIRE_TOKEN_LEN, getuid(), getpid()), -EPERM);
	}
}

#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)

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
	    T(test_reset_needs_commit),
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
	    T(test_handover_wrong_peer_burns),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
