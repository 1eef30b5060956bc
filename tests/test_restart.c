/*
 * test_restart.c: broker restarts through systemd's file descriptor store, with a harness that
 * plays systemd's side (sdstore.h: the notify socket receiving FDSTORE=1 with SCM_RIGHTS, the
 * restart with LISTEN_FDS / LISTEN_FDNAMES / LISTEN_PID).
 *
 *   - a clean restart (SIGTERM) with clients holding memory and commit credit: the books are the
 *     same to the byte before and after, every client re-attaches to its section with its data,
 *     its books and its credit, nobody is charged twice, the budget is never exceeded;
 *   - a commit waiting for memory at the stop: answered HOST_E_ABANDONED; the books the next
 *     broker restores are those of the stop;
 *   - a release the stopping broker refused: the client hands its section back rather than
 *     re-attach to books that still hold the reservation;
 *   - a client killed while the broker was away: its section is freed at the restart;
 *   - SIGKILL of the broker (no snapshot): the sections are charged what they hold, bounded by the
 *     budget, and the clients hand them back and register their commits again;
 *   - a damaged snapshot: refused with its reason, and the broker goes on as after a crash;
 *   - tokens: another process presenting a client's token, the client itself with a wrong one,
 *     and the token replayed after the client used it, are all refused, and cost the client
 *     nothing;
 *   - restarts while clients allocate, write and free without pause: the books are sampled
 *     throughout (never above the budget), every client's data survives, and at the end the
 *     broker counts for each client exactly what it holds.
 *
 * Clients are separate processes (this program run again as "client"), talking to the test over
 * pipes, so that one can be killed and none shares the test's nng.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <json-c/json.h>
#include <nng/nng.h>
#include <nng/protocol/reqrep0/req.h>

#include "harness.h"
#include "mb_wire.h"
#include "membroker.h"
#include "membroker.pb-c.h"
#include "sdstore.h"
/* A client's session id, attach token and re-attach count. */
#include "../client/client_internal.h"

#define MiB    ((uint64_t)1 << 20)
#define BUDGET (64 * MiB)

static const char *const broker_args[] = {"--budget", "64M", NULL};

/* ---- the client role: a separate process driven over pipes ---- */

static uint8_t pattern(uint64_t offset, unsigned seed)
{
	return (uint8_t)((offset >> 12) * 7 + seed);
}

/* Commits and fills bytes in a reservation of its own. */
static HRESULT commit_fill(mb_client *c, uint64_t bytes, EMemoryCriticalLevel level, unsigned seed,
			   uint8_t **out)
{
	void *p = NULL;
	HRESULT hr =
	    mb_virtual_alloc(c, NULL, bytes, MEM_RESERVE | MEM_COMMIT, PAGE_READWRITE, level, &p);
	if (hr != S_OK)
		return hr;
	for (uint64_t i = 0; i < bytes; i += 4096)
		((uint8_t *)p)[i] = pattern(i, seed);
	*out = p;
	return S_OK;
}

static void hex(const uint8_t *p, size_t n, char *out)
{
	for (size_t i = 0; i < n; i++)
		sprintf(out + 2 * i, "%02x", p[i]);
}

static void unhex(const char *s, uint8_t *p, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		unsigned v = 0;
		sscanf(s + 2 * i, "%2x", &v);
		p[i] = (uint8_t)v;
	}
}

/* A Hello asking for section id with token, on a connection of its own (not the library's).
 * Prints whether the broker re-attached it. */
static int raw_hello(const char *address, uint64_t id, const uint8_t *token, bool *resumed)
{
	Membroker__V1__Request req = MEMBROKER__V1__REQUEST__INIT;
	Membroker__V1__Hello h = MEMBROKER__V1__HELLO__INIT;
	nng_socket s;
	nng_msg *msg = NULL;
	int rv;

	*resumed = false;
	h.protocol_version = MB_PROTOCOL_VERSION;
	h.resume_session = id;
	h.resume_token.data = (uint8_t *)token;
	h.resume_token.len = MB_WIRE_TOKEN_LEN;
	req.request_id = 1;
	req.body_case = MEMBROKER__V1__REQUEST__BODY_HELLO;
	req.hello = &h;
	if ((rv = nng_req0_open(&s)) != 0)
		return rv;
	nng_socket_set_ms(s, NNG_OPT_RECVTIMEO, 10000);
	nng_socket_set_ms(s, NNG_OPT_REQ_RESENDTIME, NNG_DURATION_INFINITE);
	if ((rv = nng_dial(s, address, NULL, 0)) == 0 &&
	    (rv = mb_wire_pack_request(&req, &msg)) == 0 && (rv = nng_sendmsg(s, msg, 0)) == 0 &&
	    (rv = nng_recvmsg(s, &msg, 0)) == 0) {
		mb_response *r = mb_wire_unpack_response(nng_msg_body(msg), nng_msg_len(msg));
		*resumed = r != NULL && r->hello != NULL && r->hello->resumed;
		if (r != NULL && r->hello != NULL && r->hello->session_id == id)
			*resumed = true; /* given that section in any way */
		mb_wire_free_response(r);
		nng_msg_free(msg);
	}
	nng_close(s);
	return rv;
}

static bool usable(void *arg)
{
	mb_session_status st;
	return mb_get_session_status(arg, &st) == S_OK;
}

/* Bytes committed in the client's own map at each level, and in all. */
static void local_levels(mb_client *c, uint64_t at[3])
{
	at[0] = at[1] = at[2] = 0;
	pthread_rwlock_rdlock(&c->map_lock);
	for (mb_region *r = mb_regmap_first(&c->map); r != NULL; r = mb_regmap_next(&c->map, r))
		for (size_t i = 0; i < r->size / 4096; i++) {
			uint8_t st = mb_region_state(r, i);
			if ((st & MB_PAGE_COMMITTED) && mb_page_level(st) < 3)
				at[mb_page_level(st)] += 4096;
		}
	pthread_rwlock_unlock(&c->map_lock);
}

/* Walks the first allocation's reservation with VirtualQuery, as the runtime sees it: committed
 * bytes (whose pattern is checked: bad counts changed pages) and reserved ones, of which *held
 * still hold data in the section (the broker punches what it refuses). */
static void query_walk(mb_client *c, uint8_t *mem, uint64_t bytes, unsigned seed,
		       uint64_t *committed, uint64_t *reserved, uint64_t *held, int *bad)
{
	*committed = *reserved = *held = 0;
	*bad = 0;
	for (uint64_t off = 0; off < bytes;) {
		MEMORY_BASIC_INFORMATION mbi;
		SIZE_T n = 0;
		if (mb_virtual_query(c, mem + off, &mbi, sizeof(mbi), &n) != S_OK || n == 0)
			break;
		uint64_t run = mbi.RegionSize < bytes - off ? mbi.RegionSize : bytes - off;
		if (mbi.State == MEM_COMMIT) {
			*committed += run;
			for (uint64_t i = off; i < off + run; i += 4096)
				*bad += mem[i] != pattern(i, seed);
		} else if (mbi.State == MEM_RESERVE) {
			*reserved += run;
			for (uint64_t a = (uint64_t)(uintptr_t)(mem + off), e = a + run; a < e;) {
				off_t d = lseek(c->section_fd, (off_t)a, SEEK_DATA);
				if (d < 0 || (uint64_t)d >= e)
					break;
				off_t h = lseek(c->section_fd, d, SEEK_HOLE);
				uint64_t end = h < 0 || (uint64_t)h > e ? e : (uint64_t)h;
				*held += end - (uint64_t)d;
				a = end;
			}
		}
		off += run;
	}
}

/* argv: client <address> <bytes> <level> <seed>. Commands on stdin, one line each, answers on
 * stdout: "check", "more <bytes>", "morel <level> <bytes>" (at another level), "release" (the
 * last "more"), "hello <id> <hex token>", "levels", "walk", "quit".
 */
static int client_role(char **argv)
{
	const char *address = argv[2];
	uint64_t bytes = strtoull(argv[3], NULL, 0);
	EMemoryCriticalLevel level = (EMemoryCriticalLevel)atoi(argv[4]);
	unsigned seed = (unsigned)atoi(argv[5]);
	mb_client *c = NULL;
	mb_session_status st;
	uint8_t *mem = NULL, *last = NULL;
	char line[256], tok[2 * MB_WIRE_TOKEN_LEN + 1];

	setvbuf(stdout, NULL, _IOLBF, 0);
	prctl(PR_SET_PDEATHSIG, SIGKILL);
	if (mb_connect(address, &c) != S_OK || commit_fill(c, bytes, level, seed, &mem) != S_OK ||
	    mb_get_session_status(c, &st) != S_OK) {
		printf("fail %s\n", mb_last_error());
		return 1;
	}
	hex(c->attach_token, MB_WIRE_TOKEN_LEN, tok);
	printf("ready %llu %llu %llu %s\n", (unsigned long long)st.committed,
	       (unsigned long long)st.credit, (unsigned long long)c->session_id, tok);
	while (fgets(line, sizeof(line), stdin) != NULL) {
		if (strncmp(line, "check", 5) == 0) {
			int bad = 0;
			for (uint64_t i = 0; i < bytes; i += 4096)
				bad += mem[i] != pattern(i, seed);
			/* The broker is back when a call goes through (re-attached or handed
			 * back), which the library does on the first call after a loss. */
			bool ok = mb_test_wait_for(usable, c, 30000);
			memset(&st, 0, sizeof(st));
			mb_get_session_status(c, &st);
			printf("checked %d %d %llu %llu %u %u %llu\n", ok, bad,
			       (unsigned long long)st.committed, (unsigned long long)st.credit,
			       c->reconnects, c->reattaches, (unsigned long long)c->session_id);
		} else if (strncmp(line, "morel ", 6) == 0) {
			int l = 0;
			unsigned long long n = 0;
			sscanf(line + 6, "%d %llu", &l, &n);
			HRESULT hr = commit_fill(c, n, (EMemoryCriticalLevel)l, seed, &last);
			printf("more %d\n", (int)hr);
		} else if (strncmp(line, "levels", 6) == 0) {
			/* Its own map's levels, once the broker is back (re-registered). */
			uint64_t at[3];
			mb_test_wait_for(usable, c, 30000);
			local_levels(c, at);
			printf("levels %llu %llu %llu\n", (unsigned long long)at[0],
			       (unsigned long long)at[1], (unsigned long long)at[2]);
		} else if (strncmp(line, "walk", 4) == 0) {
			/* The first allocation as the runtime sees it, once the broker is back. */
			uint64_t com = 0, res = 0, held = 0;
			int bad = 0;
			bool ok = mb_test_wait_for(usable, c, 30000);
			query_walk(c, mem, bytes, seed, &com, &res, &held, &bad);
			memset(&st, 0, sizeof(st));
			mb_get_session_status(c, &st);
			printf("walked %d %d %llu %llu %llu %u %llu\n", ok, bad,
			       (unsigned long long)com, (unsigned long long)res,
			       (unsigned long long)st.committed, c->reconnects,
			       (unsigned long long)held);
		} else if (strncmp(line, "more ", 5) == 0) {
			HRESULT hr =
			    commit_fill(c, strtoull(line + 5, NULL, 0), level, seed, &last);
			printf("more %d\n", (int)hr);
		} else if (strncmp(line, "release", 7) == 0) {
			/* The reservation of the last "more". */
			HRESULT hr = mb_virtual_free(c, last, 0, MEM_RELEASE);
			last = NULL;
			printf("release %d\n", (int)hr);
		} else if (strncmp(line, "hello ", 6) == 0) {
			unsigned long long id = 0;
			uint8_t token[MB_WIRE_TOKEN_LEN];
			char t[2 * MB_WIRE_TOKEN_LEN + 1] = "";
			bool resumed = false;
			sscanf(line + 6, "%llu %32s", &id, t);
			unhex(t, token, sizeof(token));
			int rv = raw_hello(address, id, token, &resumed);
			printf("hello %d %d\n", rv, resumed);
		} else if (strncmp(line, "quit", 4) == 0) {
			mb_disconnect(c);
			return 0;
		}
	}
	return 0;
}

/* argv: worker <address> <ms> <seed>. Allocates (reserve + commit, 64 KiB to 1 MiB, any level),
 * writes, checks and releases blocks at random for ms, through whatever restarts happen; then
 * checks every block, and prints "done <bad> <held> <committed>": pages it found changed, the
 * bytes it holds, and what the broker counts for it. Waits for "quit". */
static int worker_role(char **argv)
{
	enum { MAX_BLOCKS = 16 };
	const char *address = argv[2];
	long long until = 0, ms = atoll(argv[3]);
	unsigned seed = (unsigned)atoi(argv[4]);
	struct {
		uint8_t *p;
		uint64_t size;
		unsigned tag;
	} blocks[MAX_BLOCKS];
	int n = 0, bad = 0;
	uint64_t held = 0;
	mb_client *c = NULL;
	mb_session_status st;
	char line[64];
	struct timespec ts;

	setvbuf(stdout, NULL, _IOLBF, 0);
	prctl(PR_SET_PDEATHSIG, SIGKILL);
	if (mb_connect(address, &c) != S_OK) {
		printf("fail %s\n", mb_last_error());
		return 1;
	}
	clock_gettime(CLOCK_MONOTONIC, &ts);
	until = ts.tv_sec * 1000LL + ts.tv_nsec / 1000000 + ms;
	for (unsigned op = 0;; op++) {
		clock_gettime(CLOCK_MONOTONIC, &ts);
		if (ts.tv_sec * 1000LL + ts.tv_nsec / 1000000 >= until)
			break;
		unsigned r = (unsigned)rand_r(&seed);
		if (n < MAX_BLOCKS && (n == 0 || r % 3 != 0)) {
			uint64_t size = (uint64_t)(1 + r % 16) << 16;
			uint8_t *p;
			if (commit_fill(c, size, (EMemoryCriticalLevel)(r % 3), op, &p) == S_OK) {
				blocks[n].p = p;
				blocks[n].size = size;
				blocks[n++].tag = op;
				held += size;
			}
		} else if (n > 0) {
			int i = (int)(r % (unsigned)n);
			for (uint64_t k = 0; k < blocks[i].size; k += 4096)
				bad += blocks[i].p[k] != pattern(k, blocks[i].tag);
			if (mb_virtual_free(c, blocks[i].p, 0, MEM_RELEASE) == S_OK) {
				held -= blocks[i].size;
				blocks[i] = blocks[--n];
			}
		}
		if (r % 7 == 0)
			usleep(1000);
	}
	for (int i = 0; i < n; i++)
		for (uint64_t k = 0; k < blocks[i].size; k += 4096)
			bad += blocks[i].p[k] != pattern(k, blocks[i].tag);
	memset(&st, 0, sizeof(st));
	mb_test_wait_for(usable, c, 30000);
	mb_get_session_status(c, &st);
	printf("done %d %llu %llu\n", bad, (unsigned long long)held,
	       (unsigned long long)st.committed);
	while (fgets(line, sizeof(line), stdin) != NULL && strncmp(line, "quit", 4) != 0)
		;
	mb_disconnect(c);
	return 0;
}

/* ---- the test's side ---- */

typedef struct client {
	pid_t pid;
	FILE *in, *out; /* its stdin, its stdout */
	uint64_t committed, credit, id;
	char token[2 * MB_WIRE_TOKEN_LEN + 1];
} client;

static void client_start(client *cl, const char *address, uint64_t bytes, int level, unsigned seed)
{
	int to[2], from[2];
	char b[32], l[8], s[8], line[256];

	assert_int_equal(pipe2(to, O_CLOEXEC), 0);
	assert_int_equal(pipe2(from, O_CLOEXEC), 0);
	snprintf(b, sizeof(b), "%llu", (unsigned long long)bytes);
	snprintf(l, sizeof(l), "%d", level);
	snprintf(s, sizeof(s), "%u", seed);
	cl->pid = fork();
	assert_true(cl->pid >= 0);
	if (cl->pid == 0) {
		dup2(to[0], 0);
		dup2(from[1], 1);
		execl("/proc/self/exe", "test_restart", "client", address, b, l, s, (char *)NULL);
		_exit(127);
	}
	close(to[0]);
	close(from[1]);
	cl->in = fdopen(to[1], "w");
	cl->out = fdopen(from[0], "r");
	setvbuf(cl->in, NULL, _IOLBF, 0);
	assert_non_null(fgets(line, sizeof(line), cl->out));
	unsigned long long c, cr, id;
	if (sscanf(line, "ready %llu %llu %llu %32s", &c, &cr, &id, cl->token) != 4)
		fail_msg("client: %s", line);
	cl->committed = c;
	cl->credit = cr;
	cl->id = id;
}

typedef struct checked {
	int ok, bad;
	uint64_t committed, credit, id;
	unsigned reconnects, reattaches;
} checked;

static checked client_check(client *cl)
{
	checked r = {0};
	char line[256];
	unsigned long long c, cr, id;

	fprintf(cl->in, "check\n");
	assert_non_null(fgets(line, sizeof(line), cl->out));
	if (sscanf(line, "checked %d %d %llu %llu %u %u %llu", &r.ok, &r.bad, &c, &cr,
		   &r.reconnects, &r.reattaches, &id) != 7)
		fail_msg("client: %s", line);
	r.committed = c;
	r.credit = cr;
	r.id = id;
	return r;
}

/* Asks for a commit of bytes more; client_more_result reads the answer (the commit may wait). */
static void client_more_ask(client *cl, uint64_t bytes)
{
	fprintf(cl->in, "more %llu\n", (unsigned long long)bytes);
}

static int client_more_result(client *cl)
{
	char line[256];
	int hr = 0;

	assert_non_null(fgets(line, sizeof(line), cl->out));
	assert_int_equal(sscanf(line, "more %d", &hr), 1);
	return hr;
}

static int client_more(client *cl, uint64_t bytes)
{
	char line[256];
	int hr = 0;

	fprintf(cl->in, "more %llu\n", (unsigned long long)bytes);
	assert_non_null(fgets(line, sizeof(line), cl->out));
	assert_int_equal(sscanf(line, "more %d", &hr), 1);
	return hr;
}

static int client_release(client *cl)
{
	char line[256];
	int hr = 0;

	fprintf(cl->in, "release\n");
	assert_non_null(fgets(line, sizeof(line), cl->out));
	assert_int_equal(sscanf(line, "release %d", &hr), 1);
	return hr;
}

/* Whether the client's raw Hello for section id with token got that section. */
static bool client_hello(client *cl, uint64_t id, const char *token)
{
	char line[256];
	int rv = -1, resumed = -1;

	fprintf(cl->in, "hello %llu %s\n", (unsigned long long)id, token);
	assert_non_null(fgets(line, sizeof(line), cl->out));
	assert_int_equal(sscanf(line, "hello %d %d", &rv, &resumed), 2);
	assert_int_equal(rv, 0);
	return resumed != 0;
}

static void client_quit(client *cl)
{
	int status;
	fprintf(cl->in, "quit\n");
	fclose(cl->in);
	fclose(cl->out);
	assert_int_equal(waitpid(cl->pid, &status, 0), cl->pid);
	assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
}

static void client_kill(client *cl)
{
	kill(cl->pid, SIGKILL);
	waitpid(cl->pid, NULL, 0);
	fclose(cl->in);
	fclose(cl->out);
}

/* The broker's books as a fresh client sees them: the ledger (memory in use plus unused credit),
 * memory in use, and sections (the probe's own included). */
typedef struct books {
	uint64_t ledger, in_use, credit, budget;
	uint32_t sessions, waiters;
} books;

static books probe(const char *address)
{
	mb_client *c = NULL;
	mb_session_status st;
	books k;

	assert_hr(mb_connect(address, &c), S_OK);
	assert_hr(mb_get_session_status(c, &st), S_OK);
	mb_disconnect(c);
	k.in_use = st.total_committed;
	k.credit = st.total_credit;
	k.ledger = st.total_committed + st.total_credit;
	k.budget = st.budget;
	k.sessions = st.sessions;
	k.waiters = st.waiters;
	assert_u64_le(k.ledger, k.budget);
	return k;
}

/* A store, and a broker started attached to it. */
typedef struct rig {
	char dir[64], address[128];
	mb_test_store *store;
	mb_test_broker b;
	const char *const *args;
} rig;

static void rig_start_with(rig *r, const char *const *args)
{
	memset(r, 0, sizeof(*r));
	snprintf(r->dir, sizeof(r->dir), "/tmp/mbrestart.XXXXXX");
	assert_non_null(mkdtemp(r->dir));
	snprintf(r->address, sizeof(r->address), "ipc://%s/mb.sock", r->dir);
	r->store = mb_test_store_open(r->dir, 1024);
	assert_non_null(r->store);
	assert_int_equal(mb_test_store_start(r->store, &r->b, r->address, args), 0);
	r->args = args;
}

static void rig_start(rig *r)
{
	rig_start_with(r, broker_args);
}

/* The broker's exit after a SIGTERM, keeping its directory. */
static void rig_wait_exit(rig *r)
{
	int status;
	assert_int_equal(waitpid(r->b.pid, &status, 0), r->b.pid);
	assert_true(WIFEXITED(status));
	assert_int_equal(WEXITSTATUS(status), 0);
	r->b.pid = -1;
}

/* SIGTERM (systemctl stop / restart), and the exit. */
static void rig_term(rig *r)
{
	kill(r->b.pid, SIGTERM);
	rig_wait_exit(r);
}

static void rig_restart(rig *r)
{
	assert_int_equal(mb_test_store_start(r->store, &r->b, r->address, r->args), 0);
}

static void rig_stop(rig *r)
{
	char cmd[128];
	assert_int_equal(mb_test_broker_stop(&r->b), 0);
	mb_test_store_close(r->store);
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", r->dir);
	assert_int_equal(system(cmd), 0);
}

typedef struct count_arg {
	mb_test_store *st;
	const char *prefix;
	size_t want;
} count_arg;

static bool store_count_is(void *arg)
{
	count_arg *a = arg;
	return mb_test_store_count(a->st, a->prefix) == a->want;
}

static void wait_store(rig *r, const char *prefix, size_t want)
{
	count_arg a = {r->store, prefix, want};
	if (!mb_test_wait_for(store_count_is, &a, 20000))
		fail_msg("the store holds %zu \"%s\" descriptors, expected %zu",
			 mb_test_store_count(r->store, prefix), prefix, want);
}

/* Whether the broker's log says what. */
static bool log_has(const rig *r, const char *what)
{
	char cmd[512];
	snprintf(cmd, sizeof(cmd), "grep -q -- '%s' '%s'", what, r->b.log);
	return system(cmd) == 0;
}

/* ---- restarts without a store: the clients hand their sections back and re-register ---- */

/* The client's own map: bytes committed at each level. */
static void client_levels(client *cl, uint64_t at[3])
{
	char line[256];
	unsigned long long a, b, c;

	fprintf(cl->in, "levels\n");
	assert_non_null(fgets(line, sizeof(line), cl->out));
	if (sscanf(line, "levels %llu %llu %llu", &a, &b, &c) != 3)
		fail_msg("client: %s", line);
	at[0] = a;
	at[1] = b;
	at[2] = c;
}

typedef struct walked {
	int ok, bad;
	uint64_t committed, reserved, broker_committed, held;
	unsigned reconnects;
} walked;

/* The client's first allocation as its runtime sees it (VirtualQuery), and the broker's count. */
static walked client_walk(client *cl)
{
	walked w = {0};
	char line[256];
	unsigned long long c, r, bc, h;

	fprintf(cl->in, "walk\n");
	assert_non_null(fgets(line, sizeof(line), cl->out));
	if (sscanf(line, "walked %d %d %llu %llu %llu %u %llu", &w.ok, &w.bad, &c, &r, &bc,
		   &w.reconnects, &h) != 7)
		fail_msg("client: %s", line);
	w.held = h;
	w.committed = c;
	w.reserved = r;
	w.broker_committed = bc;
	return w;
}

/* What the broker books for process pid at each level (membrokerctl --json clients); false if it
 * lists no such client. */
static bool ctl_levels(const char *address, pid_t pid, uint64_t at[3])
{
	char cmd[512], out[65536];
	size_t n;
	bool found = false;

	snprintf(cmd, sizeof(cmd), "%s -a '%s' --json clients", MEMBROKERCTL_PATH, address);
	FILE *f = popen(cmd, "r");
	assert_non_null(f);
	n = fread(out, 1, sizeof(out) - 1, f);
	out[n] = '\0';
	assert_int_equal(pclose(f), 0);
	json_object *o = json_tokener_parse(out), *arr;
	assert_non_null(o);
	assert_true(json_object_object_get_ex(o, "clients", &arr));
	for (size_t i = 0; i < json_object_array_length(arr); i++) {
		json_object *c = json_object_array_get_idx(arr, i), *p, *lv;
		if (!json_object_object_get_ex(c, "pid", &p) || json_object_get_int64(p) != pid)
			continue;
		assert_true(json_object_object_get_ex(c, "committed_at_level", &lv));
		assert_int_equal(json_object_array_length(lv), 3);
		for (size_t l = 0; l < 3; l++)
			at[l] = json_object_get_uint64(json_object_array_get_idx(lv, l));
		found = true;
	}
	json_object_put(o);
	return found;
}

/* A broker without a store on a socket of a directory of the test's. */
typedef struct bare {
	char dir[64], address[128];
	mb_test_broker b;
} bare;

static void bare_start(bare *r, const char *const *args)
{
	snprintf(r->dir, sizeof(r->dir), "/tmp/mbbare.XXXXXX");
	assert_non_null(mkdtemp(r->dir));
	snprintf(r->address, sizeof(r->address), "ipc://%s/mb.sock", r->dir);
	assert_int_equal(mb_test_broker_start_at(&r->b, r->address, args), 0);
}

/* Stopped (SIGTERM: no store keeps anything) and started again by hand, on the same socket. */
static void bare_restart(bare *r, const char *const *args)
{
	assert_int_equal(mb_test_broker_stop(&r->b), 0);
	assert_int_equal(mb_test_broker_start_at(&r->b, r->address, args), 0);
}

static void bare_stop(bare *r)
{
	char cmd[128];
	assert_int_equal(mb_test_broker_stop(&r->b), 0);
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", r->dir);
	assert_int_equal(system(cmd), 0);
}

/* An honest client's commits come back at the levels they were made at, to the byte. */
static void test_no_store_keeps_levels(void **state)
{
	(void)state;
	bare r;
	client app, task;
	uint64_t at[3];

	bare_start(&r, broker_args);
	/* 8 MiB at eAppDomainCritical and 4 MiB at eTaskCritical in one client; 6 MiB at
	 * eTaskCritical in another. */
	client_start(&app, r.address, 8 * MiB, 1, 41);
	fprintf(app.in, "morel 0 %llu\n", (unsigned long long)(4 * MiB));
	assert_hr(client_more_result(&app), S_OK);
	client_start(&task, r.address, 6 * MiB, 0, 42);

	bare_restart(&r, broker_args);
	checked a = client_check(&app), t = client_check(&task);
	assert_true(a.ok && t.ok);
	assert_int_equal(a.bad + t.bad, 0);
	assert_int_equal(a.reconnects, 1);
	assert_int_equal(a.reattaches, 0); /* handed back: no store, no books */
	assert_u64(a.committed, 12 * MiB);
	assert_u64(t.committed, 6 * MiB);
	/* The broker booked each page at its own level... */
	assert_true(ctl_levels(r.address, app.pid, at));
	assert_u64(at[0], 4 * MiB);
	assert_u64(at[1], 8 * MiB);
	assert_u64(at[2], 0);
	assert_true(ctl_levels(r.address, task.pid, at));
	assert_u64(at[0], 6 * MiB);
	assert_u64(at[1] + at[2], 0);
	/* ... as the client's own map keeps them. */
	client_levels(&app, at);
	assert_u64(at[0], 4 * MiB);
	assert_u64(at[1], 8 * MiB);
	assert_u64(probe(r.address).in_use, 18 * MiB);

	/* And again: a second restart by hand finds the same levels. */
	bare_restart(&r, broker_args);
	a = client_check(&app);
	assert_true(a.ok);
	assert_int_equal(a.bad, 0);
	assert_true(ctl_levels(r.address, app.pid, at));
	assert_u64(at[0], 4 * MiB);
	assert_u64(at[1], 8 * MiB);
	client_quit(&app);
	client_quit(&task);
	bare_stop(&r);
}

/*
 * A broker started by hand with a smaller budget: the clients claim more than fits. Each is booked
 * at its level through the usual checks, its data first; what does not fit is refused, punched
 * and decommitted in the client's map (its runtime sees those pages reserved, not committed), and
 * the total never passes the budget.
 */
static void test_no_store_claims_past_budget(void **state)
{
	(void)state;
	static const char *const small[] = {"--budget", "32M", NULL};
	bare r;
	client proc, task;
	uint64_t at[3];

	bare_start(&r, broker_args);
	client_start(&task, r.address, 40 * MiB, 0, 52);
	client_start(&proc, r.address, 20 * MiB, 2, 51);
	assert_u64(probe(r.address).in_use, 60 * MiB);

	bare_restart(&r, small);
	/* The eProcessCritical client comes back first: all of it fits. */
	walked p = client_walk(&proc);
	assert_true(p.ok);
	assert_int_equal(p.bad, 0);
	assert_u64(p.committed, 20 * MiB);
	assert_u64(p.broker_committed, 20 * MiB);
	books k = probe(r.address);
	assert_u64(k.in_use, 20 * MiB);
	/* The task client: only up to the task ceiling (90 % of 32 MiB), whole pages, its data. */
	uint64_t ceiling = (32 * MiB * 900 / 1000) / 4096 * 4096;
	walked t = client_walk(&task);
	assert_true(t.ok);
	assert_int_equal(t.bad, 0); /* what it kept is its data */
	assert_u64(t.committed, ceiling - 20 * MiB);
	assert_u64(t.broker_committed, ceiling - 20 * MiB);
	assert_u64(t.reserved, 40 * MiB - (ceiling - 20 * MiB));
	assert_u64(t.held, 0); /* the refused pages were punched out of its section */
	assert_u64(p.reserved, 0);
	assert_true(ctl_levels(r.address, task.pid, at));
	assert_u64(at[0], ceiling - 20 * MiB);
	k = probe(r.address);
	assert_u64_le(k.ledger, k.budget);
	assert_u64(k.in_use, ceiling);
	/* It goes on working: it may commit again what was refused, at a level that fits. */
	fprintf(task.in, "morel 2 %llu\n", (unsigned long long)MiB);
	assert_hr(client_more_result(&task), S_OK);
	k = probe(r.address);
	assert_u64_le(k.ledger, k.budget);
	assert_u64(k.in_use, ceiling + MiB);
	client_quit(&proc);
	client_quit(&task);
	assert_u64(probe(r.address).in_use, 0);
	bare_stop(&r);
}

static void test_clean_restart(void **state)
{
	(void)state;
	rig r;
	client cl[3];
	const uint64_t sizes[3] = {4 * MiB, 8 * MiB, 6 * MiB};

	rig_start(&r);
	for (int i = 0; i < 3; i++)
		client_start(&cl[i], r.address, sizes[i], i, 11 + (unsigned)i);
	/* A section and its owner's pidfd each, stored when the section was made. */
	wait_store(&r, "section-", 3);
	wait_store(&r, "owner-", 3);
	books before = probe(r.address);
	uint64_t sum = 0;
	for (int i = 0; i < 3; i++) {
		assert_u64(cl[i].committed, sizes[i]);
		sum += cl[i].committed + cl[i].credit;
	}
	assert_u64(before.ledger, sum);
	/* The clients hold commit credit too: the restart must keep it exactly. */
	assert_true(before.credit > 0);

	rig_term(&r);
	assert_true(mb_test_store_has(r.store, "snapshot"));
	assert_true(mb_test_store_stopping(r.store) >= 1);
	rig_restart(&r);
	/* The snapshot is used once: emptied and removed from the store. */
	wait_store(&r, "snapshot", 0);
	assert_true(log_has(&r, "restored 3 section(s) with their books"));

	/* Before any client is back, the books are what they were, to the byte. */
	books after = probe(r.address);
	assert_u64(after.ledger, before.ledger);
	assert_u64(after.in_use, before.in_use);
	assert_u64(after.credit, before.credit);
	assert_u64(after.budget, BUDGET);
	assert_int_equal(after.sessions, 3 + 1);
	/* Each page at the level it was committed at (client i committed at level i). */
	for (int i = 0; i < 3; i++) {
		uint64_t at[3];
		assert_true(ctl_levels(r.address, cl[i].pid, at));
		for (int l = 0; l < 3; l++)
			assert_u64(at[l], l == i ? sizes[i] : 0);
	}

	/* Each client re-attaches to its own section: data, commits and credit as they were. */
	for (int i = 0; i < 3; i++) {
		checked c = client_check(&cl[i]);
		assert_int_equal(c.ok, 1);
		assert_int_equal(c.bad, 0);
		assert_u64(c.id, cl[i].id);
		assert_u64(c.committed, cl[i].committed);
		assert_u64(c.credit, cl[i].credit);
		assert_int_equal(c.reconnects, 1);
		assert_int_equal(c.reattaches, 1);
	}
	/* Nobody was charged twice. */
	books back = probe(r.address);
	assert_u64(back.ledger, before.ledger);
	assert_u64(back.in_use, before.in_use);

	/* And they carry on. */
	for (int i = 0; i < 3; i++)
		assert_hr(client_more(&cl[i], 2 * MiB), S_OK);
	books more = probe(r.address);
	assert_u64(more.in_use, before.in_use + 6 * MiB);
	assert_u64_le(more.ledger, BUDGET);

	/* A second restart restores what the first one left. */
	rig_term(&r);
	rig_restart(&r);
	books again = probe(r.address);
	assert_u64(again.ledger, more.ledger);
	assert_u64(again.in_use, more.in_use);
	for (int i = 0; i < 3; i++) {
		checked c = client_check(&cl[i]);
		assert_int_equal(c.bad, 0);
		assert_int_equal(c.reattaches, 2);
		assert_u64(c.committed, cl[i].committed + 2 * MiB);
	}
	for (int i = 0; i < 3; i++)
		client_quit(&cl[i]);
	/* Goodbye frees the sections, and takes them out of the store. */
	wait_store(&r, "section-", 0);
	wait_store(&r, "owner-", 0);
	assert_u64(probe(r.address).ledger, 0);
	rig_stop(&r);
}

static bool one_waits(void *arg)
{
	return probe(arg).waiters == 1;
}

static void test_waiting_commit_at_stop(void **state)
{
	(void)state;
	/* Process-critical commits wait up to a minute here: long enough to stop the broker under
	 * one. */
	static const char *const args[] = {"--budget", "64M", "--waits", "0,250,60000", NULL};
	rig r;
	client a, w;

	rig_start_with(&r, args);
	client_start(&a, r.address, 40 * MiB, 2, 51);
	client_start(&w, r.address, 4 * MiB, 2, 52);
	/* 40 MiB more does not fit next to the 44 held: it waits. */
	client_more_ask(&w, 40 * MiB);
	assert_true(mb_test_wait_for(one_waits, r.address, 20000));
	books before = probe(r.address);
	rig_term(&r);
	/* The stop answers it: the client sees the stop, as without a store. */
	assert_hr(client_more_result(&w), HOST_E_ABANDONED);
	rig_restart(&r);
	books after = probe(r.address);
	assert_u64(after.ledger, before.ledger);
	assert_u64(after.in_use, before.in_use);
	assert_int_equal(after.waiters, 0);
	/* The library released the reservation of the abandoned commit at once, which the
	 * stopping broker refused: that client hands its section back rather than re-attach to
	 * books that still hold the reservation (see test_free_while_stopping). */
	checked c = client_check(&w);
	assert_int_equal(c.ok, 1);
	assert_int_equal(c.bad, 0);
	assert_u64(c.committed, 4 * MiB);
	c = client_check(&a);
	assert_int_equal(c.reattaches, 1);
	assert_u64(c.committed, 40 * MiB);
	assert_u64(probe(r.address).in_use, 44 * MiB);
	client_quit(&a);
	client_quit(&w);
	rig_stop(&r);
}

static bool snapshot_stored(void *arg)
{
	return mb_test_store_has(arg, "snapshot");
}

/* A release the stopping broker refused: the client's map no longer has the reservation, the
 * books the broker left still do. The client must not re-attach to those books: it hands its
 * section back and registers what its map holds, and can reserve those addresses again. */
static void test_free_while_stopping(void **state)
{
	(void)state;
	rig r;
	client a;

	rig_start(&r);
	client_start(&a, r.address, 4 * MiB, 1, 61);
	assert_hr(client_more(&a, 8 * MiB), S_OK);
	wait_store(&r, "section-", 1);
	books before = probe(r.address);
	/* systemd takes its time over the broker's last message: the broker stays frozen. */
	mb_test_store_hold_barrier(r.store, 2500);
	kill(r.b.pid, SIGTERM);
	assert_true(mb_test_wait_for(snapshot_stored, r.store, 20000));
	assert_hr(client_release(&a), S_OK);
	rig_wait_exit(&r);
	rig_restart(&r);
	/* The snapshot's books, the released reservation included. */
	assert_u64(probe(r.address).ledger, before.ledger);
	checked c = client_check(&a);
	assert_int_equal(c.ok, 1);
	assert_int_equal(c.bad, 0);
	assert_int_equal(c.reattaches, 0);
	assert_u64(c.committed, 4 * MiB);
	/* Nothing of the released reservation is charged any more, and the space is free. */
	books after = probe(r.address);
	assert_u64(after.in_use, 4 * MiB);
	assert_hr(client_more(&a, 8 * MiB), S_OK);
	assert_u64(probe(r.address).in_use, 12 * MiB);
	client_quit(&a);
	rig_stop(&r);
}

static void test_client_killed_meanwhile(void **state)
{
	(void)state;
	rig r;
	client a, k;

	rig_start(&r);
	client_start(&a, r.address, 4 * MiB, 1, 3);
	client_start(&k, r.address, 12 * MiB, 2, 5);
	wait_store(&r, "section-", 2);
	rig_term(&r);
	/* The client dies while no broker runs. */
	client_kill(&k);
	rig_restart(&r);
	/* Its section is freed at the restart (its stored pidfd said so) and leaves the store. */
	wait_store(&r, "section-", 1);
	wait_store(&r, "owner-", 1);
	assert_true(log_has(&r, "freed at restore"));
	books after = probe(r.address);
	assert_u64(after.ledger, a.committed + a.credit);
	assert_int_equal(after.sessions, 1 + 1);
	checked c = client_check(&a);
	assert_int_equal(c.bad, 0);
	assert_int_equal(c.reattaches, 1);
	assert_u64(c.committed, a.committed);
	client_quit(&a);
	rig_stop(&r);
}

/* After a crash there is no snapshot: the books of the restored sections are what their memfds
 * hold, and the clients hand them back and register again. */
static void crash_restart(rig *r, client *cl, int n, bool damage)
{
	for (int i = 0; i < n; i++)
		assert_true(cl[i].committed > 0);
	if (damage) {
		void *data;
		size_t len;
		rig_term(r);
		assert_int_equal(mb_test_store_read(r->store, "snapshot", &data, &len), 0);
		/* Cut in the middle: a truncated snapshot. */
		assert_int_equal(mb_test_store_rewrite(r->store, "snapshot", data, len / 2), 0);
		free(data);
	} else {
		mb_test_broker_kill(&r->b);
		assert_false(mb_test_store_has(r->store, "snapshot"));
	}
	rig_restart(r);
	if (damage)
		assert_true(log_has(r, "books snapshot refused: truncated"));
	else
		assert_true(log_has(r, "no books snapshot"));
	/* What the sections hold is charged: every page the clients committed and wrote. Their
	 * unused credit is not (it was the books', which are lost). */
	books after = probe(r->address);
	uint64_t held = 0;
	for (int i = 0; i < n; i++)
		held += cl[i].committed;
	assert_u64(after.ledger, held);
	assert_u64_le(after.ledger, BUDGET);
	for (int i = 0; i < n; i++) {
		checked c = client_check(&cl[i]);
		assert_int_equal(c.ok, 1);
		assert_int_equal(c.bad, 0);
		assert_int_equal(c.reconnects, 1);
		assert_int_equal(c.reattaches, 0); /* handed back, registered again */
		assert_u64(c.committed, cl[i].committed);
	}
	/* The records restored without books ended when their memfds came back: nothing is
	 * charged twice. */
	books back = probe(r->address);
	assert_u64(back.in_use, held);
	assert_int_equal(back.sessions, (uint32_t)n + 1);
	for (int i = 0; i < n; i++)
		assert_hr(client_more(&cl[i], 1 * MiB), S_OK);
	assert_u64(probe(r->address).in_use, held + (uint64_t)n * MiB);
}

static void test_broker_killed(void **state)
{
	(void)state;
	rig r;
	client cl[2];

	rig_start(&r);
	client_start(&cl[0], r.address, 8 * MiB, 1, 21);
	client_start(&cl[1], r.address, 16 * MiB, 2, 22);
	wait_store(&r, "section-", 2);
	crash_restart(&r, cl, 2, false);
	client_quit(&cl[0]);
	client_quit(&cl[1]);
	rig_stop(&r);
}

static void test_damaged_snapshot(void **state)
{
	(void)state;
	rig r;
	client cl[2];

	rig_start(&r);
	client_start(&cl[0], r.address, 2 * MiB, 0, 31);
	client_start(&cl[1], r.address, 10 * MiB, 1, 32);
	wait_store(&r, "section-", 2);
	crash_restart(&r, cl, 2, true);
	client_quit(&cl[0]);
	client_quit(&cl[1]);
	rig_stop(&r);
}

static void test_tokens(void **state)
{
	(void)state;
	rig r;
	client a, other;
	char wrong[sizeof(a.token)];

	rig_start(&r);
	client_start(&a, r.address, 4 * MiB, 1, 41);
	client_start(&other, r.address, 1 * MiB, 0, 42);
	wait_store(&r, "section-", 2);
	rig_term(&r);
	rig_restart(&r);
	books before = probe(r.address);

	/* Another process with the right token: not its section. */
	assert_false(client_hello(&other, a.id, a.token));
	/* The owner with a wrong token. */
	memcpy(wrong, a.token, sizeof(wrong));
	wrong[0] = wrong[0] == '0' ? '1' : '0';
	assert_false(client_hello(&a, a.id, wrong));
	/* Neither burned the token: the owner re-attaches with it. */
	checked c = client_check(&a);
	assert_int_equal(c.reattaches, 1);
	assert_u64(c.committed, a.committed);
	assert_int_equal(c.bad, 0);
	/* The token it used, replayed by its own process: spent. */
	assert_false(client_hello(&a, a.id, a.token));
	c = client_check(&a);
	assert_int_equal(c.reattaches, 1);
	assert_u64(c.id, a.id);
	assert_u64(c.committed, a.committed);
	/* The refused Hellos' empty sections went with their connections; the books are as
	 * before. */
	books after = probe(r.address);
	assert_u64(after.ledger, before.ledger);
	client_quit(&a);
	client_quit(&other);
	rig_stop(&r);
}

static void test_restarts_under_load(void **state)
{
	(void)state;
	enum { WORKERS = 4, RESTARTS = 3 };
	rig r;
	pid_t pid[WORKERS];
	FILE *in[WORKERS], *out[WORKERS];
	uint64_t sum = 0;

	rig_start(&r);
	for (int i = 0; i < WORKERS; i++) {
		int to[2], from[2];
		char seed[16];
		assert_int_equal(pipe2(to, O_CLOEXEC), 0);
		assert_int_equal(pipe2(from, O_CLOEXEC), 0);
		snprintf(seed, sizeof(seed), "%d", 71 + i);
		pid[i] = fork();
		assert_true(pid[i] >= 0);
		if (pid[i] == 0) {
			dup2(to[0], 0);
			dup2(from[1], 1);
			execl("/proc/self/exe", "test_restart", "worker", r.address, "9000", seed,
			      (char *)NULL);
			_exit(127);
		}
		close(to[0]);
		close(from[1]);
		in[i] = fdopen(to[1], "w");
		out[i] = fdopen(from[0], "r");
		setvbuf(in[i], NULL, _IOLBF, 0);
	}
	for (int k = 0; k < RESTARTS; k++) {
		/* The books sampled while the workers run (probe() asserts the budget). */
		for (int j = 0; j < 10; j++) {
			probe(r.address);
			usleep(100000);
		}
		rig_term(&r);
		rig_restart(&r);
	}
	for (int i = 0; i < WORKERS; i++) {
		char line[256];
		int bad = -1;
		unsigned long long held = 0, committed = 0;
		assert_non_null(fgets(line, sizeof(line), out[i]));
		if (sscanf(line, "done %d %llu %llu", &bad, &held, &committed) != 3)
			fail_msg("worker: %s", line);
		assert_int_equal(bad, 0);
		/* Re-attached, or handed back (a busy client usually has a call refused by the
		 * stopping broker, often the release after a refused commit): either way the
		 * broker counts exactly what the client holds. */
		assert_u64(committed, held);
		sum += held;
	}
	assert_u64(probe(r.address).in_use, sum);
	for (int i = 0; i < WORKERS; i++) {
		int status;
		fprintf(in[i], "quit\n");
		fclose(in[i]);
		fclose(out[i]);
		assert_int_equal(waitpid(pid[i], &status, 0), pid[i]);
		assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
	}
	wait_store(&r, "section-", 0);
	assert_u64(probe(r.address).ledger, 0);
	rig_stop(&r);
}

int main(int argc, char **argv)
{
	if (argc == 6 && strcmp(argv[1], "client") == 0)
		return client_role(argv);
	if (argc == 5 && strcmp(argv[1], "worker") == 0)
		return worker_role(argv);
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_clean_restart),
	    cmocka_unit_test(test_waiting_commit_at_stop),
	    cmocka_unit_test(test_free_while_stopping),
	    cmocka_unit_test(test_client_killed_meanwhile),
	    cmocka_unit_test(test_broker_killed),
	    cmocka_unit_test(test_damaged_snapshot),
	    cmocka_unit_test(test_tokens),
	    cmocka_unit_test(test_restarts_under_load),
	    cmocka_unit_test(test_no_store_keeps_levels),
	    cmocka_unit_test(test_no_store_claims_past_budget),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
