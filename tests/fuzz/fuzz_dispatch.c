/*
 * fuzz_dispatch.c: fuzz target for the broker's decode + dispatch (daemon/dispatch.c), driven
 * without sockets on a real mb_broker, with waiting commits and Watch long polls parked in
 * harness-owned mb_parked slots.
 *
 * Input: a sequence of frames. Each frame starts with a selector byte:
 *
 *   sel & 7   the session slot (see slots[] below)
 *   sel >> 5  the action:
 *     0..3    dispatch: 2 bytes length (little endian) follow, then that many bytes of request
 * body, fed to mb_dispatch_park with a free parking slot (commits may wait, Watch parks) 4 dispatch
 * the same way but with mb_dispatch (no parking slot) 5       the slot's connection ends
 * (mb_broker_disconnect, or mb_broker_process_exited when bit 4 of sel is set) and is connected
 * again, not yet said Hello (with bit 3 set: then says Hello asking for its section back with
 * its id and attach token, and must get it exactly when the broker kept it detached) 6       bit
 * 4 clear: the slot's parked requests time out (mb_dispatch_finish, expired = true); bit 4 set:
 * the slot's client hands a section of its own back (mb_broker_adopt_section with a memfd holding
 * data at 0x10000000, as after a broker restart without a store: its claims and AdoptDone are
 * then re-registration) 7       bit 4 clear:
 * mb_broker_audit and a spurious wake-up of every parked request (mb_dispatch_finish, expired =
 * false); bit 4 set: apply configuration (sel & 7) % 2 (0: defaults, 1: client limit and two groups
 * with limits and reserves)
 *
 * The broker persists across inputs (that is how the fuzzer reaches deep states) and is torn down
 * after every MB_FUZZ_RESET_EVERY inputs (default 1000) and rebuilt for the next one. The replay
 * driver sets 1, so every corpus file runs on a fresh broker and replays deterministically; with 1
 * every input also frees all it allocates, so libFuzzer's leak detection works (with larger values
 * run libFuzzer with -detect_leaks=0: the persistent state looks like a leak to it and every
 * leak check then scans the heap, which costs most of the time). After a rebuild slots 0-2 are
 * connected and have said Hello, slots 3-5 are connected only, slot 6 connects on its first Hello
 * (MB_DISPATCH_NO_SESSION, as the server does) and slot 7 never connects (a request racing its
 * connection's end). Slots 0, 1, 3 and 5 share one pid (two clients in one process).
 *
 * Checked after every frame (abort() on violation, so libFuzzer reports it):
 *   - a body that mb_wire_unpack_request rejects is dropped, one it accepts is answered or parked;
 *   - every reply decodes with mb_wire_unpack_response, carries the request's id, has a detail
 *     text exactly when it is a failure, and the body its operation promises;
 *   - ledger.committed == mb_broker_sum_sessions() <= budget, each group's committed bytes and
 *     session count equal the sums over its sessions, b->reg.conns equals the sessions in the
 * tree;
 *   - the broker's waiting commits and parked requests are exactly the harness's waiting slots,
 *     hooks are called only in the right states.
 * At the end of every input all parked requests are finished (expired = true) and answered, and
 * each session's map counters and MEM_RESET list entries are checked against the regions.
 *
 *   - one frame (one request, or one control action, with its replies) takes at most
 *     MB_FUZZ_FRAME_MS milliseconds of CPU time (default 250, 0 = no limit; normal frames take
 *     microseconds): every request runs under the broker's only lock, so one slow request
 *     stalls every client.
 *
 * Environment: MB_FUZZ_RESET_EVERY (see above), MB_FUZZ_FRAME_MS (see above),
 * MB_FUZZ_MAX_RESERVE (bytes: Reserve requests larger than this are skipped, to keep fuzzing past
 * a known problem; default no limit), MB_FUZZ_LOG (a syslog priority number for the broker's
 * log; default errors only).
 */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "broker.h"
#include "credit.h"
#include "memfd.h"
#include "dispatch.h"
#include "log.h"
#include "mb_credit.h"
#include "mb_hresult.h"
#include "mb_regmap.h"
#include "mb_wire.h"

#define MIB	  (1024ULL * 1024ULL)
#define BUDGET	  (64 * MIB)
#define NSLOTS	  8
#define NPARK	  32
#define PIPE_BASE 11

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

enum slot_init { SLOT_HELLO, SLOT_CONNECTED, SLOT_LAZY, SLOT_NEVER };

typedef struct slot {
	uint32_t pipe;
	int pid_kind; /* 0: our pid, 1: our parent, 2: init */
	uid_t uid;
	gid_t gid;
	const char *name;
	enum slot_init init;
} slot;

/* Not const: a slot that reconnects gets a new pipe id, as from nng (the broker remembers the
 * pipes that ended, and never takes one back). */
static slot slots[NSLOTS] = {
    {PIPE_BASE + 0, 0, 1000, 1000, "fuzz-a", SLOT_HELLO},
    {PIPE_BASE + 1, 0, 1000, 1000, "batch-1", SLOT_HELLO},
    {PIPE_BASE + 2, 1, 0, 0, "root", SLOT_HELLO},
    {PIPE_BASE + 3, 0, 1001, 1000, NULL, SLOT_CONNECTED},
    {PIPE_BASE + 4, 2, 1002, 1002, NULL, SLOT_CONNECTED},
    {PIPE_BASE + 5, 0, 0, 0, NULL, SLOT_CONNECTED},
    {PIPE_BASE + 6, 0, 1003, 1003, NULL, SLOT_LAZY},
    {PIPE_BASE + 7, 0, 1004, 1004, NULL, SLOT_NEVER},
};

/* A parking slot: the caller-owned storage the broker parks a request in. */
typedef struct park_slot {
	mb_parked p;
	bool used;  /* handed to mb_dispatch_park and parked there */
	bool woken; /* wake() was called since the last finish */
	uint32_t armed_ms;
	uint64_t request_id;
	int op; /* request body case */
} park_slot;

static mb_broker broker;
static bool broker_up;
static park_slot parks[NPARK];
static unsigned long inputs;
static unsigned long reset_every = 1000;
static uint64_t max_reserve = UINT64_MAX;
static uint64_t frame_ms = 250;
static mb_config configs[2];

#define CHECK(cond)                                                                                \
	do {                                                                                       \
		if (!(cond)) {                                                                     \
			fprintf(stderr, "fuzz_dispatch: %s:%d: invariant violated: %s\n",          \
				__FILE__, __LINE__, #cond);                                        \
			abort();                                                                   \
		}                                                                                  \
	} while (0)

static pid_t slot_pid(const slot *s)
{
	switch (s->pid_kind) {
	case 0:
		return getpid();
	case 1:
		return getppid();
	default:
		return 1;
	}
}

/* CPU time of this thread (not wall time: a loaded machine must not fail the check). */
static uint64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* ---- parking hooks: record only (they run with the broker lock held) ---- */

static void hook_arm(mb_parked *p, uint32_t ms)
{
	park_slot *ps = p->owner;

	CHECK(ps != NULL && &ps->p == p);
	CHECK(p->state == MB_PARK_WAITING);
	ps->armed_ms = ms;
}

static void hook_wake(mb_parked *p)
{
	park_slot *ps = p->owner;

	CHECK(ps != NULL && &ps->p == p);
	CHECK(ps->used);
	CHECK(p->state == MB_PARK_DONE);
	ps->woken = true;
}

static park_slot *free_park(void)
{
	for (int i = 0; i < NPARK; i++) {
		park_slot *ps = &parks[i];
		if (!ps->used) {
			memset(&ps->p, 0, sizeof(ps->p));
			ps->p.state = MB_PARK_IDLE;
			ps->p.arm = hook_arm;
			ps->p.wake = hook_wake;
			ps->p.owner = ps;
			ps->woken = false;
			ps->armed_ms = 0;
			return ps;
		}
	}
	return NULL;
}

/* ---- reply checks ---- */

static bool op_has_body(int op)
{
	return op == MEMBROKER__V1__REQUEST__BODY_HELLO ||
	       op == MEMBROKER__V1__REQUEST__BODY_MEMORY_LOAD ||
	       op == MEMBROKER__V1__REQUEST__BODY_SESSION_STATUS ||
	       op == MEMBROKER__V1__REQUEST__BODY_WATCH ||
	       op == MEMBROKER__V1__REQUEST__BODY_SYNC ||
	       op == MEMBROKER__V1__REQUEST__BODY_ADOPT_DONE;
}

/* A reply the broker sends must be well-formed and answer the request it is for. */
static void check_reply(nng_msg *msg, uint64_t request_id, int op)
{
	mb_response *r;

	CHECK(msg != NULL);
	r = mb_wire_unpack_response(nng_msg_body(msg), nng_msg_len(msg));
	CHECK(r != NULL);
	CHECK(r->request_id == request_id);
	CHECK(r->detail != NULL);
	/* Failures explain themselves; successes carry no detail. */
	if ((HRESULT)r->hresult == S_OK)
		CHECK(r->detail[0] == '\0');
	else
		CHECK(r->detail[0] != '\0');
	if ((HRESULT)r->hresult == S_OK && op_has_body(op)) {
		switch (op) {
		case MEMBROKER__V1__REQUEST__BODY_HELLO:
			CHECK(r->body_case == MEMBROKER__V1__RESPONSE__BODY_HELLO);
			/* A new section comes with a hand-over token, a re-attached one without. */
			CHECK(r->hello->fd_token.len ==
			      (r->hello->resumed ? 0 : MB_WIRE_TOKEN_LEN));
			CHECK(r->hello->attach_token.len == MB_WIRE_TOKEN_LEN);
			CHECK(r->hello->session_id != 0);
			CHECK(r->hello->protocol_version == MB_PROTOCOL_VERSION);
			CHECK(r->hello->budget == broker.books.ledger.budget);
			break;
		case MEMBROKER__V1__REQUEST__BODY_MEMORY_LOAD:
			CHECK(r->body_case == MEMBROKER__V1__RESPONSE__BODY_MEMORY_LOAD);
			CHECK(r->memory_load->memory_load <= 100);
			CHECK(r->memory_load->available_bytes <= broker.books.ledger.budget);
			break;
		case MEMBROKER__V1__REQUEST__BODY_SESSION_STATUS:
			CHECK(r->body_case == MEMBROKER__V1__RESPONSE__BODY_SESSION_STATUS);
			/* Committed means in use: unused commit credit is left out. */
			CHECK(r->session_status->total_committed +
				  r->session_status->total_credit ==
			      broker.books.ledger.committed);
			CHECK(r->session_status->credit <= r->session_status->total_credit);
			CHECK(r->session_status->committed <= r->session_status->total_committed);
			CHECK(r->session_status->budget == broker.books.ledger.budget);
			break;
		case MEMBROKER__V1__REQUEST__BODY_SYNC:
			CHECK(r->body_case == MEMBROKER__V1__RESPONSE__BODY_SYNC);
			/* The target grows while a client keeps running out, to a bound. */
			CHECK(r->sync->credit <= broker.conf.commit_credit << MB_CREDIT_MAX_GROWTH);
			break;
		case MEMBROKER__V1__REQUEST__BODY_WATCH:
			CHECK(r->body_case == MEMBROKER__V1__RESPONSE__BODY_WATCH);
			CHECK(r->watch->level >= 1 && r->watch->level <= 3);
			break;
		case MEMBROKER__V1__REQUEST__BODY_ADOPT_DONE:
			CHECK(r->body_case == MEMBROKER__V1__RESPONSE__BODY_ADOPT_DONE);
			CHECK(r->adopt_done->n_refused <= MB_WIRE_MAX_REFUSED);
			CHECK(r->adopt_done->more ? r->adopt_done->n_refused == MB_WIRE_MAX_REFUSED
						  : true);
			for (size_t k = 0; k < r->adopt_done->n_refused; k++)
				CHECK(r->adopt_done->refused[k]->size > 0 &&
				      (r->adopt_done->refused[k]->address & 4095) == 0 &&
				      (r->adopt_done->refused[k]->size & 4095) == 0);
			break;
		}
	} else if ((HRESULT)r->hresult == S_OK && op == MEMBROKER__V1__REQUEST__BODY_COMMIT &&
		   r->body_case == MEMBROKER__V1__RESPONSE__BODY_ADOPT_DONE) {
		/* A claim cut short names the refused rest. */
		CHECK(r->adopt_done->n_refused == 1 && r->adopt_done->refused[0]->size > 0);
	} else {
		/* Only the operations above ever carry a body, and failures never do. */
		CHECK(r->body_case == MEMBROKER__V1__RESPONSE__BODY__NOT_SET);
	}
	mb_wire_free_response(r);
}

/* ---- broker-wide invariants ---- */

static void check_broker(void)
{
	mb_broker *b = &broker;
	uint64_t group_sum[MB_MAX_GROUPS] = {0};
	uint32_t group_n[MB_MAX_GROUPS] = {0};
	uint32_t sections = 0, waiting = 0, waiting_commits = 0;

	uint64_t credit = 0;

	CHECK(b->books.ledger.committed == mb_broker_sum_sessions(b));
	CHECK(b->books.ledger.committed <= b->books.ledger.budget);
	for (mb_section *s = mb_registry_first(&b->reg); s != NULL; s = mb_registry_next(s)) {
		sections++;
		credit += s->credit;
		/* The harness never takes credit from the word, while Sync may report local
		 * commits that never took any: the word can only hold more than the books. */
		CHECK(s->credit_word == NULL || mb_credit_peek(s->credit_word) >= s->credit);
		/* Reservation quotas hold with the reservation credit counted as reserved. */
		CHECK(
		    s->map.count + s->reserve_count <=
		    (b->conf.client_max_reservations ? b->conf.client_max_reservations : 1000000u));
		CHECK(s->reserve_count <= MB_RESERVE_CREDIT_COUNT);
		CHECK(s->reserve_bytes <= MB_RESERVE_CREDIT_BYTES);
		CHECK(s->group < b->conf.ngroups);
		/* Attached exactly when a connection points back at it. */
		CHECK((s->state == MB_SECTION_ATTACHED) == (s->conn != NULL));
		CHECK(s->conn == NULL || s->conn->section == s);
		if (s->group >= 0) {
			group_sum[s->group] += mb_section_charged(s);
			group_n[s->group]++;
		}
	}
	CHECK(sections == b->reg.sections);
	CHECK(credit == b->books.credit_total);
	for (int g = 0; g < b->conf.ngroups; g++) {
		CHECK(b->books.group_charged[g] == group_sum[g]);
		CHECK(b->books.group_sessions[g] == group_n[g]);
	}
	for (int i = 0; i < NPARK; i++) {
		const park_slot *ps = &parks[i];
		if (!ps->used)
			continue;
		if (ps->p.state == MB_PARK_WAITING) {
			waiting++;
			waiting_commits += ps->p.kind == MB_PARK_COMMIT;
			CHECK(!ps->woken);
		} else {
			/* Every finished request was woken, and the harness answers it at once. */
			CHECK(ps->p.state == MB_PARK_DONE && ps->woken);
		}
	}
	CHECK(b->nwaiters == waiting_commits);
	CHECK(mb_broker_parked(b) == waiting);
}

/* Slower checks, once per input: each map's counters and the MEM_RESET lists. */
static void check_maps(void)
{
	mb_broker *b = &broker;

	for (mb_section *s = mb_registry_first(&b->reg); s != NULL; s = mb_registry_next(s)) {
		size_t count = 0, reserved = 0, committed = 0, at[MB_PAGE_LEVELS] = {0};
		uint32_t resets = 0;

		for (mb_region *r = mb_regmap_first(&s->map); r != NULL;
		     r = mb_regmap_next(&s->map, r)) {
			size_t by_level = 0;
			count++;
			reserved += r->size;
			committed += r->committed_pages;
			CHECK(r->committed_pages <= r->size / MB_PAGE_SIZE);
			/* Every committed page has a level, 0 to 2. */
			for (int l = 0; l < MB_PAGE_LEVELS; l++) {
				by_level += r->committed_at[l];
				at[l] += r->committed_at[l];
			}
			CHECK(by_level == r->committed_pages);
			CHECK(r->committed_at[MB_PAGE_LEVELS - 1] == 0);
		}
		CHECK(count == s->map.count);
		CHECK(reserved == s->map.reserved_bytes);
		CHECK(committed == s->map.committed_pages);
		for (int l = 0; l < MB_PAGE_LEVELS; l++)
			CHECK(at[l] == s->map.committed_at[l]);
		/* Claims live only while a section re-registers. */
		CHECK(s->adopting || s->claimed_pages == 0);
		for (int level = 0; level < MB_LEVELS; level++) {
			mb_reset_range *rr;
			TAILQ_FOREACH(rr, &b->resets[level], link)
				resets += rr->section_id == s->id;
		}
		CHECK(resets == s->resets);
	}
}

/* ---- actions ---- */

/* Answers every parked request the broker finished (woken). */
static void answer_woken(void)
{
	for (int i = 0; i < NPARK; i++) {
		park_slot *ps = &parks[i];
		nng_msg *reply = NULL;

		if (!ps->used || !ps->woken)
			continue;
		CHECK(ps->p.state == MB_PARK_DONE);
		CHECK(mb_dispatch_finish(&broker, &ps->p, false, &reply) == MB_DISPATCH_REPLY);
		CHECK(ps->p.state == MB_PARK_IDLE);
		check_reply(reply, ps->request_id, ps->op);
		nng_msg_free(reply);
		ps->used = false;
		ps->woken = false;
	}
}

/* Finishes waiting requests (of one pipe, or all with pipe 0) as their owner would. */
static void finish_parked(uint32_t pipe, bool expired)
{
	for (int i = 0; i < NPARK; i++) {
		park_slot *ps = &parks[i];
		nng_msg *reply = NULL;
		int rv;

		if (!ps->used || ps->p.state != MB_PARK_WAITING ||
		    (pipe != 0 && ps->p.pipe_id != pipe))
			continue;
		rv = mb_dispatch_finish(&broker, &ps->p, expired, &reply);
		if (rv == MB_DISPATCH_PARKED) {
			/* A spurious wake-up before the deadline: re-armed, still waiting. */
			CHECK(!expired);
			CHECK(ps->p.state == MB_PARK_WAITING);
			CHECK(reply == NULL);
			continue;
		}
		CHECK(rv == MB_DISPATCH_REPLY);
		CHECK(ps->p.state == MB_PARK_IDLE);
		check_reply(reply, ps->request_id, ps->op);
		nng_msg_free(reply);
		ps->used = false;
		ps->woken = false;
	}
	answer_woken();
}

static int connect_slot(int i)
{
	const slot *s = &slots[i];

	return mb_broker_connect(&broker, s->pipe, slot_pid(s), s->uid, s->gid);
}

static void hello_slot(int i)
{
	mb_request req = MEMBROKER__V1__REQUEST__INIT;
	Membroker__V1__Hello h = MEMBROKER__V1__HELLO__INIT;
	nng_msg *in = NULL, *out = NULL;

	h.protocol_version = MB_PROTOCOL_VERSION;
	h.name = (char *)slots[i].name;
	h.pid = (uint32_t)slot_pid(&slots[i]);
	req.request_id = 1;
	req.body_case = MEMBROKER__V1__REQUEST__BODY_HELLO;
	req.hello = &h;
	CHECK(mb_wire_pack_request(&req, &in) == 0);
	CHECK(mb_dispatch(&broker, slots[i].pipe, nng_msg_body(in), nng_msg_len(in), &out) ==
	      MB_DISPATCH_REPLY);
	check_reply(out, 1, MEMBROKER__V1__REQUEST__BODY_HELLO);
	nng_msg_free(in);
	nng_msg_free(out);
}

/* Hello on slot i's new connection asking for section id back with token: re-attached exactly
 * when the section was kept detached (its process lives and it held something). */
static void resume_slot(int i, uint64_t id, const uint8_t *token)
{
	mb_request req = MEMBROKER__V1__REQUEST__INIT;
	Membroker__V1__Hello h = MEMBROKER__V1__HELLO__INIT;
	nng_msg *in = NULL, *out = NULL;
	mb_section *kept = mb_registry_section(&broker.reg, id);
	bool expect = kept != NULL && kept->state == MB_SECTION_DETACHED;

	h.protocol_version = MB_PROTOCOL_VERSION;
	h.name = (char *)slots[i].name;
	h.resume_session = id;
	h.resume_token.data = (uint8_t *)token;
	h.resume_token.len = MB_WIRE_TOKEN_LEN;
	req.request_id = 2;
	req.body_case = MEMBROKER__V1__REQUEST__BODY_HELLO;
	req.hello = &h;
	CHECK(mb_wire_pack_request(&req, &in) == 0);
	CHECK(mb_dispatch(&broker, slots[i].pipe, nng_msg_body(in), nng_msg_len(in), &out) ==
	      MB_DISPATCH_REPLY);
	check_reply(out, 2, MEMBROKER__V1__REQUEST__BODY_HELLO);
	mb_response *r = mb_wire_unpack_response(nng_msg_body(out), nng_msg_len(out));
	CHECK(r != NULL);
	/* A banned or throttled process is refused outright; otherwise it is answered. */
	if ((HRESULT)r->hresult == S_OK) {
		CHECK(r->hello->resumed == expect);
		CHECK((r->hello->session_id == id) == expect);
		if (expect)
			CHECK(mb_registry_section(&broker.reg, id)->state == MB_SECTION_ATTACHED &&
			      mb_registry_by_pipe(&broker.reg, slots[i].pipe)->id == id);
	}
	mb_wire_free_response(r);
	nng_msg_free(in);
	nng_msg_free(out);
}

static void make_configs(void)
{
	mb_config *c;

	mb_config_defaults(&configs[0]);
	c = &configs[1];
	mb_config_defaults(c);
	c->client_max = 32 * MIB;
	c->client_max_reservations = 4096;
	c->ngroups = 2;
	snprintf(c->groups[0].name, sizeof(c->groups[0].name), "users");
	c->groups[0].uids.n = 1;
	c->groups[0].uids.r[0] = (mb_id_range){1000, 1001};
	c->groups[0].gids.n = 1;
	c->groups[0].gids.r[0] = (mb_id_range){1002, 1002};
	c->groups[0].max = 40 * MIB;
	c->groups[0].reserve = 8 * MIB;
	snprintf(c->groups[1].name, sizeof(c->groups[1].name), "batch");
	c->groups[1].npatterns = 1;
	snprintf(c->groups[1].patterns[0], sizeof(c->groups[1].patterns[0]), "batch*");
	c->groups[1].name_uids.n = 1;
	c->groups[1].name_uids.r[0] = (mb_id_range){0, 65535};
	c->groups[1].max = 16 * MIB;
	c->groups[1].reserve = 4 * MIB;
}

static void broker_down(void)
{
	if (!broker_up)
		return;
	finish_parked(0, true);
	mb_broker_fini(&broker);
	/* fini answers nothing new: every parked request was finished above. */
	for (int i = 0; i < NPARK; i++)
		CHECK(!parks[i].used);
	broker_up = false;
}

static void broker_fresh(void)
{
	broker_down();
	CHECK(mb_broker_init(&broker, BUDGET) == 0);
	broker_up = true;
	for (int i = 0; i < NSLOTS; i++) {
		slots[i].pipe = PIPE_BASE + (uint32_t)i;
		if (slots[i].init == SLOT_HELLO || slots[i].init == SLOT_CONNECTED)
			CHECK(connect_slot(i) == 0);
		if (slots[i].init == SLOT_HELLO)
			hello_slot(i);
	}
	check_broker();
}

static void init_once(void)
{
	static bool done;
	const char *e;

	if (done)
		return;
	done = true;
	if ((e = getenv("MB_FUZZ_RESET_EVERY")) != NULL && atol(e) > 0)
		reset_every = (unsigned long)atol(e);
	if ((e = getenv("MB_FUZZ_MAX_RESERVE")) != NULL && *e != '\0')
		max_reserve = strtoull(e, NULL, 0);
	if ((e = getenv("MB_FUZZ_FRAME_MS")) != NULL && *e != '\0')
		frame_ms = strtoull(e, NULL, 0);
	mb_log_set_level((e = getenv("MB_FUZZ_LOG")) != NULL ? atoi(e) : LOG_ERR);
	make_configs();
	atexit(broker_down);
}

/* One request body on slot i, with a parking slot unless no_park. */
static void dispatch(int i, const uint8_t *body, size_t len, bool no_park)
{
	const slot *sl = &slots[i];
	mb_request *req = mb_wire_unpack_request(body, len);
	bool decoded = req != NULL;
	park_slot *ps = no_park ? NULL : free_park();
	nng_msg *reply = NULL;
	uint64_t request_id = 0;
	int op = 0, rv;

	if (decoded) {
		bool skip = false;
		request_id = req->request_id;
		op = req->body_case;
		if (op == MEMBROKER__V1__REQUEST__BODY_RESERVE && req->reserve->size > max_reserve)
			skip = true;
		mb_wire_free_request(req);
		if (skip)
			return;
	}
	if (ps != NULL) {
		/* In use from now on: the broker may even finish it before returning. */
		ps->used = true;
		ps->request_id = request_id;
		ps->op = op;
	}
	rv = mb_dispatch_park(&broker, sl->pipe, body, len, &reply, ps ? &ps->p : NULL);
	if (rv == MB_DISPATCH_NO_SESSION) {
		CHECK(decoded && op == MEMBROKER__V1__REQUEST__BODY_HELLO);
		CHECK(reply == NULL);
		CHECK(mb_registry_by_pipe(&broker.reg, sl->pipe) == NULL);
		if (sl->init == SLOT_NEVER) {
			if (ps != NULL)
				ps->used = false;
			return;
		}
		CHECK(connect_slot(i) == 0);
		rv = mb_dispatch_park(&broker, sl->pipe, body, len, &reply, ps ? &ps->p : NULL);
		CHECK(rv != MB_DISPATCH_NO_SESSION);
	}
	if (!decoded) {
		CHECK(rv == MB_DISPATCH_DROP);
		CHECK(reply == NULL);
		if (ps != NULL)
			ps->used = false;
		return;
	}
	/* A well-formed request is always answered or parked, never dropped. */
	CHECK(rv == MB_DISPATCH_REPLY || rv == MB_DISPATCH_PARKED);
	if (rv == MB_DISPATCH_PARKED) {
		CHECK(ps != NULL);
		CHECK(reply == NULL);
		CHECK(op == MEMBROKER__V1__REQUEST__BODY_COMMIT ||
		      op == MEMBROKER__V1__REQUEST__BODY_WATCH);
		CHECK(ps->p.state == MB_PARK_WAITING || (ps->p.state == MB_PARK_DONE && ps->woken));
		CHECK(ps->p.pipe_id == sl->pipe && ps->p.request_id == request_id);
		CHECK(ps->p.kind ==
		      (op == MEMBROKER__V1__REQUEST__BODY_COMMIT ? MB_PARK_COMMIT : MB_PARK_WATCH));
		CHECK(ps->armed_ms > 0);
		return;
	}
	if (ps != NULL) {
		CHECK(ps->p.state == MB_PARK_IDLE && !ps->woken);
		ps->used = false;
	}
	check_reply(reply, request_id, op);
	nng_msg_free(reply);
}

static void control(int i, int action, uint8_t sel)
{
	const slot *sl = &slots[i];

	switch (action) {
	case 5:
		if (sel & 0x10) {
			/* The process dies first (its section is freed), then its connection
			 * closes. */
			mb_section *s = mb_registry_by_pipe(&broker.reg, sl->pipe);
			if (s != NULL) {
				uint64_t id = s->id;
				mb_broker_process_exited(&broker, id);
				CHECK(mb_registry_section(&broker.reg, id) == NULL);
			}
		}
		/* Bit 3: the client comes back on its new connection with the section's id and
		 * attach token, as the library does after a dropped connection. */
		uint64_t resume_id = 0;
		uint8_t token[MB_WIRE_TOKEN_LEN];
		mb_section *held = mb_registry_by_pipe(&broker.reg, sl->pipe);
		if ((sel & 0x08) && held != NULL) {
			resume_id = held->id;
			memcpy(token, held->attach_token, sizeof(token));
		}
		mb_broker_disconnect(&broker, sl->pipe);
		CHECK(mb_registry_by_pipe(&broker.reg, sl->pipe) == NULL);
		/* Its parked requests were answered (woken) by the broker. */
		for (int k = 0; k < NPARK; k++)
			if (parks[k].used && parks[k].p.pipe_id == sl->pipe)
				CHECK(parks[k].p.state == MB_PARK_DONE);
		slots[i].pipe += NSLOTS;
		if (sl->init != SLOT_NEVER)
			CHECK(connect_slot(i) == 0);
		if (resume_id != 0 && sl->init != SLOT_NEVER)
			resume_slot(i, resume_id, token);
		break;
	case 6:
		if (sel & 0x10) {
			/* A section handed back: only right after Hello (nothing reserved), with
			 * its hand-over token unused, as the library does. */
			mb_section *s = mb_registry_by_pipe(&broker.reg, sl->pipe);
			if (s == NULL || s->token_used)
				break;
			int fd = mb_memfd_create("fuzz", broker.section_size);
			CHECK(fd >= 0);
			for (uint64_t a = 0x10000000; a < 0x10000000 + 64 * 4096; a += 3 * 4096)
				CHECK(pwrite(fd, "d", 1, (off_t)a) == 1);
			if (mb_broker_adopt_section(&broker, s->id, s->token, sizeof(s->token),
						    s->uid, s->pid, fd) != 0)
				close(fd);
			break;
		}
		finish_parked(sl->pipe, true);
		break;
	default:
		if (sel & 0x10) {
			mb_broker_apply_config(&broker, &configs[i % 2]);
		} else {
			mb_broker_audit(&broker);
			finish_parked(0, false);
		}
		break;
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	size_t pos = 0;

	init_once();
	if (!broker_up)
		broker_fresh();

	while (pos < size) {
		uint8_t sel = data[pos++];
		int i = sel & 7, action = sel >> 5;
		uint64_t t0 = now_ms();

		if (action <= 4) {
			size_t len;
			if (size - pos < 2)
				break;
			len = (size_t)data[pos] | (size_t)data[pos + 1] << 8;
			pos += 2;
			if (len > size - pos)
				len = size - pos;
			dispatch(i, data + pos, len, action == 4);
			pos += len;
		} else {
			control(i, action, sel);
		}
		answer_woken();
		/* One message of at most 4 KiB runs under the broker's only lock: it must be cheap
		 * whatever it asks for (a slow one stalls every client). */
		if (frame_ms != 0 && now_ms() - t0 > frame_ms) {
			fprintf(stderr,
				"fuzz_dispatch: frame at offset %zu (selector 0x%02x) took %llu ms "
				"of CPU\n",
				pos, sel, (unsigned long long)(now_ms() - t0));
			CHECK(!"one frame took longer than MB_FUZZ_FRAME_MS");
		}
		check_broker();
	}
	finish_parked(0, true);
	check_broker();
	CHECK(mb_broker_parked(&broker) == 0 && broker.nwaiters == 0);
	for (int k = 0; k < NPARK; k++)
		CHECK(!parks[k].used);
	check_maps();
	/* Tearing down at the end (not at the start of the next input) keeps every input with a
	 * reset self-contained: with MB_FUZZ_RESET_EVERY=1 all it allocates is freed before it
	 * returns, so libFuzzer's leak check is cheap and meaningful. */
	if (++inputs % reset_every == 0)
		broker_down();
	return 0;
}
