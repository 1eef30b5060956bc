/*
 * make_corpus.c: writes the seed corpus of the fuzz targets.
 *
 *   fuzz_make_corpus OUTDIR      -> OUTDIR/wire/<name>, OUTDIR/dispatch/<name>,
 *                                   OUTDIR/snapshot/<name>
 *
 * wire/: one packed Request (mb_wire_pack_request) of every kind, and a few packed Responses.
 * dispatch/: scenarios in fuzz_dispatch.c's frame format (selector byte, 2-byte little-endian
 * length, request body; control selectors have no length): every operation, waiting commits that
 * are granted, time out or are abandoned, Watch long polls, MEM_RESET reclaim, two clients of one
 * process, group and client limits, and requests that are refused.
 * snapshot/: packed books snapshot payloads (proto/snapshot.proto; fuzz_snapshot.c frames them):
 * none, two sections with reservations, page runs, credit, a section held without books, a
 * MEM_RESET range, and books that do not add up.
 *
 * The committed copy lives in tests/fuzz/corpus/; regenerate it with
 *   fuzz_make_corpus tests/fuzz/corpus
 * (files with the same names are overwritten, regress-* files are left alone).
 */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "mb_hresult.h"
#include "mb_wire.h"
#include "snapshot.pb-c.h"

#define KIB  1024ULL
#define MIB  (1024ULL * 1024ULL)
#define BASE 0x10000000ULL

/* Selectors of fuzz_dispatch.c. */
#define SEL_PARK(slot)	   ((uint8_t)(0x00 | (slot)))
#define SEL_NOPARK(slot)   ((uint8_t)(0x80 | (slot)))
#define SEL_DISCONN(slot)  ((uint8_t)(0xA0 | (slot)))
#define SEL_EXITED(slot)   ((uint8_t)(0xB0 | (slot)))
#define SEL_REATTACH(slot) ((uint8_t)(0xA8 | (slot)))
#define SEL_EXPIRE(slot)   ((uint8_t)(0xC0 | (slot)))
#define SEL_HANDBACK(slot) ((uint8_t)(0xD0 | (slot)))
#define SEL_AUDIT	   ((uint8_t)0xE0)
#define SEL_CONFIG(n)	   ((uint8_t)(0xF0 | (n)))

static const char *outdir;
static uint64_t next_id = 1;

/* ---- output ---- */

typedef struct buf {
	uint8_t data[65536];
	size_t len;
} buf;

static void die(const char *what)
{
	fprintf(stderr, "make_corpus: %s: %s\n", what, strerror(errno));
	exit(1);
}

static void write_file(const char *sub, const char *name, const void *data, size_t len)
{
	char path[4096];
	FILE *f;

	snprintf(path, sizeof(path), "%s/%s", outdir, sub);
	if (mkdir(path, 0755) != 0 && errno != EEXIST)
		die(path);
	snprintf(path, sizeof(path), "%s/%s/%s", outdir, sub, name);
	if ((f = fopen(path, "wb")) == NULL)
		die(path);
	if (len > 0 && fwrite(data, 1, len, f) != len)
		die(path);
	if (fclose(f) != 0)
		die(path);
}

static nng_msg *pack(mb_request *req)
{
	nng_msg *m = NULL;

	req->request_id = next_id++;
	if (mb_wire_pack_request(req, &m) != 0) {
		fprintf(stderr, "make_corpus: cannot pack a request\n");
		exit(1);
	}
	return m;
}

static void put(buf *b, const void *p, size_t n)
{
	if (n > sizeof(b->data) - b->len) {
		fprintf(stderr, "make_corpus: scenario too long\n");
		exit(1);
	}
	memcpy(b->data + b->len, p, n);
	b->len += n;
}

/* Appends a dispatch frame with the packed request. */
static void frame(buf *b, uint8_t sel, mb_request *req)
{
	nng_msg *m = pack(req);
	size_t n = nng_msg_len(m);
	uint8_t hdr[3] = {sel, (uint8_t)(n & 0xff), (uint8_t)(n >> 8)};

	put(b, hdr, sizeof(hdr));
	put(b, nng_msg_body(m), n);
	nng_msg_free(m);
}

static void frame_raw(buf *b, uint8_t sel, const void *body, size_t n)
{
	uint8_t hdr[3] = {sel, (uint8_t)(n & 0xff), (uint8_t)(n >> 8)};

	put(b, hdr, sizeof(hdr));
	put(b, body, n);
}

static void ctl(buf *b, uint8_t sel)
{
	put(b, &sel, 1);
}

/* ---- requests ---- */

static void hello(buf *b, uint8_t sel, uint32_t version, const char *name)
{
	mb_request r = MEMBROKER__V1__REQUEST__INIT;
	Membroker__V1__Hello m = MEMBROKER__V1__HELLO__INIT;

	m.protocol_version = version;
	m.name = (char *)name;
	m.pid = 4242;
	r.body_case = MEMBROKER__V1__REQUEST__BODY_HELLO;
	r.hello = &m;
	frame(b, sel, &r);
}

/* Hello asking for section id back with a token (0x11 repeated: never the right one). */
static void hello_resume(buf *b, uint8_t sel, uint64_t id)
{
	mb_request r = MEMBROKER__V1__REQUEST__INIT;
	Membroker__V1__Hello m = MEMBROKER__V1__HELLO__INIT;
	uint8_t token[MB_WIRE_TOKEN_LEN];

	memset(token, 0x11, sizeof(token));
	m.protocol_version = MB_PROTOCOL_VERSION;
	m.name = "resume";
	m.resume_session = id;
	m.resume_token.data = token;
	m.resume_token.len = sizeof(token);
	r.body_case = MEMBROKER__V1__REQUEST__BODY_HELLO;
	r.hello = &m;
	frame(b, sel, &r);
}

static void goodbye(buf *b, uint8_t sel)
{
	mb_request r = MEMBROKER__V1__REQUEST__INIT;
	Membroker__V1__Goodbye m = MEMBROKER__V1__GOODBYE__INIT;

	r.body_case = MEMBROKER__V1__REQUEST__BODY_GOODBYE;
	r.goodbye = &m;
	frame(b, sel, &r);
}

static void reserve(buf *b, uint8_t sel, uint64_t address, uint64_t size)
{
	mb_request r = MEMBROKER__V1__REQUEST__INIT;
	Membroker__V1__Reserve m = MEMBROKER__V1__RESERVE__INIT;

	m.address = address;
	m.size = size;
	r.body_case = MEMBROKER__V1__REQUEST__BODY_RESERVE;
	r.reserve = &m;
	frame(b, sel, &r);
}

static void release(buf *b, uint8_t sel, uint64_t address)
{
	mb_request r = MEMBROKER__V1__REQUEST__INIT;
	Membroker__V1__Release m = MEMBROKER__V1__RELEASE__INIT;

	m.address = address;
	r.body_case = MEMBROKER__V1__REQUEST__BODY_RELEASE;
	r.release = &m;
	frame(b, sel, &r);
}

static void commit(buf *b, uint8_t sel, uint64_t address, uint64_t size, uint32_t level)
{
	mb_request r = MEMBROKER__V1__REQUEST__INIT;
	Membroker__V1__Commit m = MEMBROKER__V1__COMMIT__INIT;

	m.address = address;
	m.size = size;
	m.level = level;
	r.body_case = MEMBROKER__V1__REQUEST__BODY_COMMIT;
	r.commit = &m;
	frame(b, sel, &r);
}

/* A claim: Commit.adopt, re-registration of a handed-back section. */
static void claim(buf *b, uint8_t sel, uint64_t address, uint64_t size, uint32_t level)
{
	mb_request r = MEMBROKER__V1__REQUEST__INIT;
	Membroker__V1__Commit m = MEMBROKER__V1__COMMIT__INIT;

	m.address = address;
	m.size = size;
	m.level = level;
	m.adopt = true;
	r.body_case = MEMBROKER__V1__REQUEST__BODY_COMMIT;
	r.commit = &m;
	frame(b, sel, &r);
}

static void adopt_done(buf *b, uint8_t sel)
{
	mb_request r = MEMBROKER__V1__REQUEST__INIT;
	Membroker__V1__AdoptDone m = MEMBROKER__V1__ADOPT_DONE__INIT;

	r.body_case = MEMBROKER__V1__REQUEST__BODY_ADOPT_DONE;
	r.adopt_done = &m;
	frame(b, sel, &r);
}

static void decommit(buf *b, uint8_t sel, uint64_t address, uint64_t size)
{
	mb_request r = MEMBROKER__V1__REQUEST__INIT;
	Membroker__V1__Decommit m = MEMBROKER__V1__DECOMMIT__INIT;

	m.address = address;
	m.size = size;
	r.body_case = MEMBROKER__V1__REQUEST__BODY_DECOMMIT;
	r.decommit = &m;
	frame(b, sel, &r);
}

static void reset(buf *b, uint8_t sel, uint64_t address, uint64_t size, int undo)
{
	mb_request r = MEMBROKER__V1__REQUEST__INIT;
	Membroker__V1__Reset m = MEMBROKER__V1__RESET__INIT;
	Membroker__V1__ResetUndo u = MEMBROKER__V1__RESET_UNDO__INIT;

	if (undo) {
		u.address = address;
		u.size = size;
		r.body_case = MEMBROKER__V1__REQUEST__BODY_RESET_UNDO;
		r.reset_undo = &u;
	} else {
		m.address = address;
		m.size = size;
		r.body_case = MEMBROKER__V1__REQUEST__BODY_RESET;
		r.reset = &m;
	}
	frame(b, sel, &r);
}

static void memory_load(buf *b, uint8_t sel)
{
	mb_request r = MEMBROKER__V1__REQUEST__INIT;
	Membroker__V1__MemoryLoad m = MEMBROKER__V1__MEMORY_LOAD__INIT;

	r.body_case = MEMBROKER__V1__REQUEST__BODY_MEMORY_LOAD;
	r.memory_load = &m;
	frame(b, sel, &r);
}

static void status(buf *b, uint8_t sel)
{
	mb_request r = MEMBROKER__V1__REQUEST__INIT;
	Membroker__V1__SessionStatus m = MEMBROKER__V1__SESSION_STATUS__INIT;

	r.body_case = MEMBROKER__V1__REQUEST__BODY_SESSION_STATUS;
	r.session_status = &m;
	frame(b, sel, &r);
}

static void watch(buf *b, uint8_t sel, uint32_t last_level)
{
	mb_request r = MEMBROKER__V1__REQUEST__INIT;
	Membroker__V1__Watch m = MEMBROKER__V1__WATCH__INIT;

	m.last_level = last_level;
	r.body_case = MEMBROKER__V1__REQUEST__BODY_WATCH;
	r.watch = &m;
	frame(b, sel, &r);
}

/* Reports n local commits of size bytes each, from address on, spaced by stride. */
static void sync_commits(buf *b, uint8_t sel, uint64_t address, uint64_t size, uint64_t stride,
			 int n, uint32_t level)
{
	mb_request r = MEMBROKER__V1__REQUEST__INIT;
	Membroker__V1__Sync m = MEMBROKER__V1__SYNC__INIT;
	Membroker__V1__LocalCommit lc[MB_WIRE_MAX_SYNC];
	Membroker__V1__LocalCommit *lcp[MB_WIRE_MAX_SYNC];

	if (n > MB_WIRE_MAX_SYNC)
		n = MB_WIRE_MAX_SYNC;
	for (int i = 0; i < n; i++) {
		membroker__v1__local_commit__init(&lc[i]);
		lc[i].address = address + (uint64_t)i * stride;
		lc[i].size = size;
		lc[i].level = level;
		lcp[i] = &lc[i];
	}
	m.n_commits = (size_t)n;
	m.commits = lcp;
	r.body_case = MEMBROKER__V1__REQUEST__BODY_SYNC;
	r.sync = &m;
	frame(b, sel, &r);
}

/* Reports n local reservations of size bytes each, from address on, spaced by stride, and one
 * local commit in the first. */
static void sync_reserves(buf *b, uint8_t sel, uint64_t address, uint64_t size, uint64_t stride,
			  int n)
{
	mb_request r = MEMBROKER__V1__REQUEST__INIT;
	Membroker__V1__Sync m = MEMBROKER__V1__SYNC__INIT;
	Membroker__V1__LocalReserve lr[MB_WIRE_MAX_SYNC];
	Membroker__V1__LocalReserve *lrp[MB_WIRE_MAX_SYNC];
	Membroker__V1__LocalCommit lc = MEMBROKER__V1__LOCAL_COMMIT__INIT;
	Membroker__V1__LocalCommit *lcp = &lc;

	if (n > MB_WIRE_MAX_SYNC)
		n = MB_WIRE_MAX_SYNC;
	for (int i = 0; i < n; i++) {
		membroker__v1__local_reserve__init(&lr[i]);
		lr[i].address = address + (uint64_t)i * stride;
		lr[i].size = size;
		lrp[i] = &lr[i];
	}
	m.n_reserves = (size_t)n;
	m.reserves = lrp;
	lc.address = address;
	lc.size = 4 * KIB;
	m.n_commits = 1;
	m.commits = &lcp;
	r.body_case = MEMBROKER__V1__REQUEST__BODY_SYNC;
	r.sync = &m;
	frame(b, sel, &r);
}

/* Reports local frees: a decommit of size at address and a release of the reservation at base,
 * then a local reservation at base again with a commit in it; exhausted as given. */
static void sync_frees(buf *b, uint8_t sel, uint64_t base, uint64_t address, uint64_t size,
		       bool exhausted)
{
	mb_request r = MEMBROKER__V1__REQUEST__INIT;
	Membroker__V1__Sync m = MEMBROKER__V1__SYNC__INIT;
	Membroker__V1__LocalFree lf[2] = {MEMBROKER__V1__LOCAL_FREE__INIT,
					  MEMBROKER__V1__LOCAL_FREE__INIT};
	Membroker__V1__LocalFree *lfp[2] = {&lf[0], &lf[1]};
	Membroker__V1__LocalReserve lr = MEMBROKER__V1__LOCAL_RESERVE__INIT;
	Membroker__V1__LocalReserve *lrp = &lr;
	Membroker__V1__LocalCommit lc = MEMBROKER__V1__LOCAL_COMMIT__INIT;
	Membroker__V1__LocalCommit *lcp = &lc;

	lf[0].address = address;
	lf[0].size = size;
	lf[1].address = base;
	lf[1].release = true;
	m.n_frees = 2;
	m.frees = lfp;
	lr.address = base;
	lr.size = 1 * MIB;
	m.n_reserves = 1;
	m.reserves = &lrp;
	lc.address = base;
	lc.size = 4 * KIB;
	m.n_commits = 1;
	m.commits = &lcp;
	m.exhausted = exhausted;
	r.body_case = MEMBROKER__V1__REQUEST__BODY_SYNC;
	r.sync = &m;
	frame(b, sel, &r);
}

/* ---- wire corpus: one file per message ---- */

static void wire_request(const char *name, void (*fn)(buf *, uint8_t))
{
	buf *b = calloc(1, sizeof(*b));

	if (b == NULL)
		die("calloc");
	fn(b, 0);
	/* Strip the 3-byte frame header: the wire target takes a bare body. */
	write_file("wire", name, b->data + 3, b->len - 3);
	free(b);
}

static void w_hello(buf *b, uint8_t s)
{
	hello(b, s, MB_PROTOCOL_VERSION, "wire-client");
}
static void w_reserve(buf *b, uint8_t s)
{
	reserve(b, s, BASE, 1 * MIB);
}
static void w_release(buf *b, uint8_t s)
{
	release(b, s, BASE);
}
static void w_commit(buf *b, uint8_t s)
{
	commit(b, s, BASE, 64 * KIB, 2);
}
static void w_decommit(buf *b, uint8_t s)
{
	decommit(b, s, BASE, 4 * KIB);
}
static void w_reset(buf *b, uint8_t s)
{
	reset(b, s, BASE, 8 * KIB, 0);
}
static void w_reset_undo(buf *b, uint8_t s)
{
	reset(b, s, BASE, 8 * KIB, 1);
}
static void w_memory_load(buf *b, uint8_t s)
{
	memory_load(b, s);
}
static void w_status(buf *b, uint8_t s)
{
	status(b, s);
}
static void w_watch(buf *b, uint8_t s)
{
	watch(b, s, 2);
}

static void w_sync_reserves(buf *b, uint8_t s)
{
	sync_reserves(b, s, BASE, 64 * KIB, 64 * KIB, 3);
}
static void w_sync_frees(buf *b, uint8_t s)
{
	sync_frees(b, s, BASE, BASE + 64 * KIB, 64 * KIB, true);
}
static void w_claim(buf *b, uint8_t s)
{
	claim(b, s, BASE, 16 * MIB, 1);
}

static void w_adopt_done(buf *b, uint8_t s)
{
	adopt_done(b, s);
}

static void w_sync(buf *b, uint8_t s)
{
	sync_commits(b, s, BASE, 4 * KIB, 8 * KIB, 3, 1);
}

static void wire_response(const char *name, mb_response *r)
{
	nng_msg *m = NULL;

	if (mb_wire_pack_response(r, &m) != 0) {
		fprintf(stderr, "make_corpus: cannot pack a response\n");
		exit(1);
	}
	write_file("wire", name, nng_msg_body(m), nng_msg_len(m));
	nng_msg_free(m);
}

static void wire_corpus(void)
{
	static uint8_t token[MB_WIRE_TOKEN_LEN] = {1, 2,  3,  4,  5,  6,  7, 8,
						   9, 10, 11, 12, 13, 14, 15};
	mb_response r = MEMBROKER__V1__RESPONSE__INIT;
	Membroker__V1__HelloReply h = MEMBROKER__V1__HELLO_REPLY__INIT;
	Membroker__V1__MemoryLoadReply l = MEMBROKER__V1__MEMORY_LOAD_REPLY__INIT;
	Membroker__V1__SessionStatusReply st = MEMBROKER__V1__SESSION_STATUS_REPLY__INIT;
	Membroker__V1__WatchReply w = MEMBROKER__V1__WATCH_REPLY__INIT;

	wire_request("req-hello", w_hello);
	wire_request("req-reserve", w_reserve);
	wire_request("req-release", w_release);
	wire_request("req-commit", w_commit);
	wire_request("req-decommit", w_decommit);
	wire_request("req-reset", w_reset);
	wire_request("req-reset-undo", w_reset_undo);
	wire_request("req-memory-load", w_memory_load);
	wire_request("req-session-status", w_status);
	wire_request("req-watch", w_watch);
	wire_request("req-sync", w_sync);
	wire_request("req-sync-reserves", w_sync_reserves);
	wire_request("req-sync-frees", w_sync_frees);
	wire_request("req-adopt-claim", w_claim);
	wire_request("req-adopt-done", w_adopt_done);

	r.request_id = 7;
	r.hresult = (uint32_t)S_OK;
	h.protocol_version = MB_PROTOCOL_VERSION;
	h.session_id = 3;
	h.fd_token.data = token;
	h.fd_token.len = sizeof(token);
	h.budget = 64 * MIB;
	h.section_size = 1ULL << 47;
	r.body_case = MEMBROKER__V1__RESPONSE__BODY_HELLO;
	r.hello = &h;
	wire_response("resp-hello", &r);

	l.memory_load = 42;
	l.available_bytes = 12 * MIB;
	r.body_case = MEMBROKER__V1__RESPONSE__BODY_MEMORY_LOAD;
	r.memory_load = &l;
	wire_response("resp-memory-load", &r);

	st.budget = 64 * MIB;
	st.total_committed = 9 * MIB;
	st.committed = 1 * MIB;
	st.reserved = 16 * MIB;
	st.reservations = 3;
	st.sessions = 2;
	st.section_allocated = 4096;
	st.waiters = 1;
	st.pressure = 2;
	st.reclaimed = 8192;
	st.offences = 1;
	r.body_case = MEMBROKER__V1__RESPONSE__BODY_SESSION_STATUS;
	r.session_status = &st;
	wire_response("resp-session-status", &r);

	w.level = 1;
	r.body_case = MEMBROKER__V1__RESPONSE__BODY_WATCH;
	r.watch = &w;
	wire_response("resp-watch", &r);

	Membroker__V1__AdoptDoneReply ad = MEMBROKER__V1__ADOPT_DONE_REPLY__INIT;
	Membroker__V1__Range rg[2] = {MEMBROKER__V1__RANGE__INIT, MEMBROKER__V1__RANGE__INIT};
	Membroker__V1__Range *prg[2] = {&rg[0], &rg[1]};
	rg[0].address = BASE;
	rg[0].size = 64 * KIB;
	rg[1].address = BASE + MIB;
	rg[1].size = 4 * MIB;
	ad.n_refused = 2;
	ad.refused = prg;
	ad.more = true;
	ad.booked = 12 * MIB;
	ad.refused_bytes = 5 * MIB;
	r.body_case = MEMBROKER__V1__RESPONSE__BODY_ADOPT_DONE;
	r.adopt_done = &ad;
	wire_response("resp-adopt-done", &r);

	r.body_case = MEMBROKER__V1__RESPONSE__BODY__NOT_SET;
	r.hresult = (uint32_t)E_OUTOFMEMORY;
	r.detail = "budget: 67108864 of 67108864 bytes committed";
	wire_response("resp-error-detail", &r);
	r.hresult = (uint32_t)S_OK;
	r.detail = "";
	wire_response("resp-ok", &r);
}

/* ---- dispatch corpus: scenarios ---- */

typedef void (*scenario)(buf *b);

static void s_basic(buf *b)
{
	reserve(b, SEL_PARK(0), BASE, 1 * MIB);
	commit(b, SEL_PARK(0), BASE, 64 * KIB, 0);
	commit(b, SEL_PARK(0), BASE + 32 * KIB, 64 * KIB, 1);
	status(b, SEL_PARK(0));
	memory_load(b, SEL_PARK(0));
	decommit(b, SEL_PARK(0), BASE + 4 * KIB, 8 * KIB);
	release(b, SEL_PARK(0), BASE);
	status(b, SEL_PARK(0));
}

/* Commit credit: a commit tops it up; Syncs book local commits (good and bad ones). */
static void s_sync(buf *b)
{
	reserve(b, SEL_PARK(0), BASE, 1 * MIB);
	commit(b, SEL_PARK(0), BASE, 64 * KIB, 0);
	sync_commits(b, SEL_PARK(0), BASE + 64 * KIB, 4 * KIB, 8 * KIB, 16, 1);
	sync_commits(b, SEL_PARK(0), BASE + 64 * KIB, 4 * KIB, 8 * KIB, 16, 1); /* again */
	sync_commits(b, SEL_PARK(0), BASE + 3, 4 * KIB, 8 * KIB, 1, 0);		/* misaligned */
	sync_commits(b, SEL_PARK(0), BASE, 64 * MIB, 0, 1, 0);		/* over the credit */
	sync_commits(b, SEL_PARK(0), BASE + 2 * MIB, 4 * KIB, 0, 1, 0); /* no reservation */
	sync_commits(b, SEL_PARK(0), BASE + 512 * KIB, 4 * KIB, 4 * KIB, 64, 2);
	sync_commits(b, SEL_PARK(1), BASE, 4 * KIB, 0, 1, 0); /* before any reservation */
	status(b, SEL_PARK(0));
	memory_load(b, SEL_PARK(0));
	decommit(b, SEL_PARK(0), BASE, 1 * MIB);
	release(b, SEL_PARK(0), BASE);
	status(b, SEL_PARK(0));
}

/* Local frees of booked pages (good and forged ones) and the growing credit target. */
static void s_sync_frees(buf *b)
{
	reserve(b, SEL_PARK(0), BASE, 1 * MIB);
	commit(b, SEL_PARK(0), BASE, 256 * KIB, 0);
	sync_frees(b, SEL_PARK(0), BASE, BASE + 64 * KIB, 64 * KIB, true);
	sync_frees(b, SEL_PARK(0), BASE, BASE + 64 * KIB, 64 * KIB, true);	    /* again */
	sync_frees(b, SEL_PARK(0), BASE + 8 * MIB, BASE + 8 * MIB, 4 * KIB, false); /* forged */
	sync_frees(b, SEL_PARK(0), BASE, BASE + 4 * KIB + 1, 4 * KIB, false);	    /* misaligned */
	sync_frees(b, SEL_PARK(1), BASE, BASE, 4 * KIB, true); /* before any reservation */
	commit(b, SEL_PARK(0), BASE, 1 * MIB, 2);
	status(b, SEL_PARK(0));
	release(b, SEL_PARK(0), BASE);
	status(b, SEL_PARK(0));
}

/* Reservation credit: a Reserve grants it; Syncs book local reservations (good and bad ones). */
static void s_sync_reserves(buf *b)
{
	reserve(b, SEL_PARK(0), BASE, 1 * MIB);
	commit(b, SEL_PARK(0), BASE, 64 * KIB, 0);
	sync_reserves(b, SEL_PARK(0), BASE + 2 * MIB, 256 * KIB, 256 * KIB, 8);
	sync_reserves(b, SEL_PARK(0), BASE + 2 * MIB, 256 * KIB, 256 * KIB, 1);	 /* again */
	sync_reserves(b, SEL_PARK(0), BASE + 4 * MIB + 4 * KIB, 64 * KIB, 0, 1); /* misaligned */
	sync_reserves(b, SEL_PARK(0), BASE + 8 * MIB, 128ull << 30, 0, 1); /* over the credit */
	sync_reserves(b, SEL_PARK(0), BASE + 16 * MIB, 64 * KIB, 64 * KIB, 64);
	sync_reserves(b, SEL_PARK(1), BASE, 64 * KIB, 0, 1); /* before any reservation */
	status(b, SEL_PARK(0));
	release(b, SEL_PARK(0), BASE + 2 * MIB);
	release(b, SEL_PARK(0), BASE);
	status(b, SEL_PARK(0));
}

/* Goodbye ends a section at once; resumes with wrong tokens, of known and unknown sections, on
 * fresh and on used connections. */
static void s_goodbye_resume(buf *b)
{
	reserve(b, SEL_PARK(0), BASE, 1 * MIB);
	commit(b, SEL_PARK(0), BASE, 64 * KIB, 0);
	hello_resume(b, SEL_PARK(3), 1);
	hello_resume(b, SEL_PARK(4), 999);
	hello_resume(b, SEL_PARK(1), 1); /* a connection that said Hello already */
	goodbye(b, SEL_PARK(0));
	reserve(b, SEL_PARK(0), BASE, 1 * MIB); /* the section is gone */
	goodbye(b, SEL_PARK(0));
	goodbye(b, SEL_PARK(5)); /* before Hello */
	status(b, SEL_PARK(1));
}

/* Connections drop and come back for their sections: a section holding memory is re-attached
 * with its books, an empty one was freed, and one whose process died is gone. */
static void s_reattach(buf *b)
{
	reserve(b, SEL_PARK(0), BASE, 1 * MIB);
	commit(b, SEL_PARK(0), BASE, 256 * KIB, 1);
	ctl(b, SEL_REATTACH(0));
	commit(b, SEL_PARK(0), BASE + 256 * KIB, 64 * KIB, 0);
	status(b, SEL_PARK(0));
	ctl(b, SEL_REATTACH(1)); /* holds nothing: not kept */
	status(b, SEL_PARK(1));
	reserve(b, SEL_PARK(2), BASE, 64 * KIB);
	ctl(b, SEL_REATTACH(2));
	ctl(b, SEL_DISCONN(0));		 /* detached, still charged */
	hello_resume(b, SEL_PARK(0), 1); /* a wrong token: a new section */
	status(b, SEL_PARK(0));
	ctl(b, SEL_EXITED(2));
	ctl(b, SEL_AUDIT);
	status(b, SEL_PARK(1));
}

static void s_lazy_hello(buf *b)
{
	hello(b, SEL_PARK(6), MB_PROTOCOL_VERSION, "lazy");
	reserve(b, SEL_PARK(6), BASE, 256 * KIB);
	commit(b, SEL_PARK(6), BASE, 256 * KIB, 2);
	hello(b, SEL_PARK(3), MB_PROTOCOL_VERSION, "batch-late");
	reserve(b, SEL_PARK(3), 2 * BASE, 128 * KIB);
	commit(b, SEL_PARK(3), 2 * BASE, 128 * KIB, 0);
	status(b, SEL_PARK(3));
}

static void s_never_connected(buf *b)
{
	hello(b, SEL_PARK(7), MB_PROTOCOL_VERSION, "ghost");
	reserve(b, SEL_PARK(7), BASE, 64 * KIB);
	status(b, SEL_PARK(7));
}

static void s_protocol_errors(buf *b)
{
	reserve(b, SEL_PARK(4), BASE, 64 * KIB); /* before Hello */
	hello(b, SEL_PARK(4), 99, "future");	 /* wrong version */
	hello(b, SEL_PARK(4), MB_PROTOCOL_VERSION, "now");
	hello(b, SEL_PARK(4), MB_PROTOCOL_VERSION, "twice");
	hello(b, SEL_PARK(0), MB_PROTOCOL_VERSION, "again");
}

static void s_bad_ranges(buf *b)
{
	reserve(b, SEL_PARK(0), BASE + 4 * KIB, 64 * KIB);	     /* not 64 KiB aligned */
	reserve(b, SEL_PARK(0), BASE, 100);			     /* not a page multiple */
	reserve(b, SEL_PARK(0), 0, 64 * KIB);			     /* below the minimum */
	reserve(b, SEL_PARK(0), (1ULL << 47) - 64 * KIB, 128 * KIB); /* past the top */
	reserve(b, SEL_PARK(0), BASE, 0);
	reserve(b, SEL_PARK(0), BASE, 68 * KIB);
	reserve(b, SEL_PARK(0), BASE + 64 * KIB, 64 * KIB);  /* inside the first one's span */
	commit(b, SEL_PARK(0), BASE + 64 * KIB, 8 * KIB, 0); /* crosses the reservation */
	commit(b, SEL_PARK(0), BASE, 8 * KIB, 3);	     /* bad level */
	commit(b, SEL_PARK(0), BASE + 1, 8 * KIB, 0);
	commit(b, SEL_PARK(0), BASE, UINT64_MAX & ~4095ULL, 0);
	decommit(b, SEL_PARK(0), 3 * BASE, 4 * KIB);
	release(b, SEL_PARK(0), BASE + 4 * KIB);
	release(b, SEL_PARK(0), 3 * BASE);
	reset(b, SEL_PARK(0), BASE, 4 * KIB, 0); /* not committed */
	reset(b, SEL_PARK(0), BASE, 4 * KIB, 1);
}

static void s_reset_undo(buf *b)
{
	reserve(b, SEL_PARK(0), BASE, 1 * MIB);
	commit(b, SEL_PARK(0), BASE, 256 * KIB, 0);
	reset(b, SEL_PARK(0), BASE, 128 * KIB, 0);
	reset(b, SEL_PARK(0), BASE + 64 * KIB, 128 * KIB, 0);
	reset(b, SEL_PARK(0), BASE, 128 * KIB, 1);
	decommit(b, SEL_PARK(0), BASE + 128 * KIB, 64 * KIB);
	reset(b, SEL_PARK(0), BASE + 128 * KIB, 128 * KIB, 1);
	release(b, SEL_PARK(0), BASE);
}

static void s_reclaim(buf *b)
{
	reserve(b, SEL_PARK(0), BASE, 64 * MIB);
	commit(b, SEL_PARK(0), BASE, 56 * MIB, 0);
	reset(b, SEL_PARK(0), BASE, 40 * MIB, 0);
	reserve(b, SEL_PARK(1), 2 * BASE, 16 * MIB);
	commit(b, SEL_PARK(1), 2 * BASE, 16 * MIB, 0); /* reclaims the reset pages */
	status(b, SEL_PARK(0));
	reset(b, SEL_PARK(0), BASE, 40 * MIB, 1); /* undo: some were discarded */
	memory_load(b, SEL_PARK(1));
}

static void s_park_granted(buf *b)
{
	reserve(b, SEL_PARK(0), BASE, 64 * MIB);
	commit(b, SEL_PARK(0), BASE, 56 * MIB, 0);
	reserve(b, SEL_PARK(1), 2 * BASE, 16 * MIB);
	commit(b, SEL_PARK(1), 2 * BASE, 8 * MIB, 1); /* over 97%: waits */
	commit(b, SEL_PARK(2), 3 * BASE, 8 * MIB, 2); /* no reservation */
	status(b, SEL_PARK(1));
	decommit(b, SEL_PARK(0), BASE, 16 * MIB); /* the waiter is granted */
	status(b, SEL_PARK(1));
}

static void s_park_timeout(buf *b)
{
	reserve(b, SEL_PARK(0), BASE, 64 * MIB);
	commit(b, SEL_PARK(0), BASE, 57 * MIB, 0);
	reserve(b, SEL_PARK(2), 2 * BASE, 16 * MIB);
	commit(b, SEL_PARK(2), 2 * BASE, 8 * MIB, 2);
	commit(b, SEL_PARK(2), 2 * BASE + 8 * MIB, 4 * MIB, 1);
	ctl(b, SEL_AUDIT); /* spurious wake-ups */
	ctl(b, SEL_EXPIRE(2));
	memory_load(b, SEL_PARK(2));
}

static void s_park_abandoned(buf *b)
{
	reserve(b, SEL_PARK(0), BASE, 64 * MIB);
	commit(b, SEL_PARK(0), BASE, 57 * MIB, 0);
	reserve(b, SEL_PARK(1), 2 * BASE, 16 * MIB);
	commit(b, SEL_PARK(1), 2 * BASE, 8 * MIB, 2);
	watch(b, SEL_PARK(1), 1);
	ctl(b, SEL_DISCONN(1));
	commit(b, SEL_PARK(0), BASE + 57 * MIB, 6 * MIB, 1);
	ctl(b, SEL_EXITED(0));
	status(b, SEL_PARK(2));
}

static void s_park_released(buf *b)
{
	reserve(b, SEL_PARK(0), BASE, 64 * MIB);
	commit(b, SEL_PARK(0), BASE, 57 * MIB, 0);
	reserve(b, SEL_PARK(1), 2 * BASE, 16 * MIB);
	commit(b, SEL_PARK(1), 2 * BASE, 8 * MIB, 2);
	release(b, SEL_PARK(1), 2 * BASE); /* the waiting range goes away */
	release(b, SEL_PARK(0), BASE);
}

static void s_no_park(buf *b)
{
	reserve(b, SEL_PARK(0), BASE, 64 * MIB);
	commit(b, SEL_PARK(0), BASE, 57 * MIB, 0);
	reserve(b, SEL_PARK(1), 2 * BASE, 16 * MIB);
	commit(b, SEL_NOPARK(1), 2 * BASE, 8 * MIB, 2);
	watch(b, SEL_NOPARK(1), 1);
}

static void s_watch(buf *b)
{
	watch(b, SEL_PARK(0), 0);
	watch(b, SEL_PARK(0), 3);
	watch(b, SEL_PARK(1), 3);
	reserve(b, SEL_PARK(2), BASE, 64 * MIB);
	commit(b, SEL_PARK(2), BASE, 40 * MIB, 0); /* pressure changes */
	watch(b, SEL_PARK(0), 2);
	commit(b, SEL_PARK(2), BASE + 40 * MIB, 18 * MIB, 0);
	decommit(b, SEL_PARK(2), BASE, 58 * MIB);
	ctl(b, SEL_AUDIT);
}

static void s_same_pid(buf *b)
{
	reserve(b, SEL_PARK(0), BASE, 1 * MIB);
	commit(b, SEL_PARK(0), BASE, 64 * KIB, 0);
	commit(b, SEL_PARK(1), BASE, 64 * KIB, 0); /* the other client's memory */
	decommit(b, SEL_PARK(1), BASE, 4 * KIB);
	release(b, SEL_PARK(1), BASE);
	reset(b, SEL_PARK(1), BASE, 4 * KIB, 0);
	commit(b, SEL_PARK(2), BASE, 64 * KIB, 0); /* another process */
	reserve(b, SEL_PARK(1), BASE, 1 * MIB);	   /* its own, same address */
}

static void s_groups(buf *b)
{
	ctl(b, SEL_CONFIG(1));
	reserve(b, SEL_PARK(1), BASE, 32 * MIB);
	commit(b, SEL_PARK(1), BASE, 12 * MIB, 0);
	commit(b, SEL_PARK(1), BASE + 12 * MIB, 8 * MIB, 2); /* group limit */
	reserve(b, SEL_PARK(0), BASE, 64 * MIB);
	commit(b, SEL_PARK(0), BASE, 30 * MIB, 0);
	commit(b, SEL_PARK(0), BASE + 30 * MIB, 8 * MIB, 1); /* client limit */
	memory_load(b, SEL_PARK(2));
	hello(b, SEL_PARK(3), MB_PROTOCOL_VERSION, "batch-3");
	reserve(b, SEL_PARK(3), BASE, 16 * MIB);
	commit(b, SEL_PARK(3), BASE, 8 * MIB, 0);
	ctl(b, SEL_CONFIG(0));
	commit(b, SEL_PARK(1), BASE + 12 * MIB, 8 * MIB, 2);
	ctl(b, SEL_CONFIG(1));
	ctl(b, SEL_DISCONN(3));
	status(b, SEL_PARK(1));
}

static void s_many_reservations(buf *b)
{
	for (int i = 0; i < 40; i++)
		reserve(b, SEL_PARK(i % 3), BASE + (uint64_t)i * 64 * KIB, 64 * KIB);
	for (int i = 0; i < 40; i++)
		commit(b, SEL_PARK(i % 3), BASE + (uint64_t)i * 64 * KIB, 4 * KIB,
		       (uint32_t)(i % 3));
	ctl(b, SEL_DISCONN(2));
	for (int i = 0; i < 40; i += 2)
		release(b, SEL_PARK(i % 3), BASE + (uint64_t)i * 64 * KIB);
}

static void s_garbage(buf *b)
{
	static const uint8_t junk[] = {0xff, 0xff, 0xff, 0xff, 0x0f, 0x12, 0x80};
	static const uint8_t only_id[] = {0x08, 0x05};
	static const uint8_t empty_commit[] = {0x08, 0x06, 0x6a, 0x00};

	frame_raw(b, SEL_PARK(0), junk, sizeof(junk));
	frame_raw(b, SEL_PARK(0), only_id, sizeof(only_id)); /* no operation: dropped */
	frame_raw(b, SEL_PARK(0), NULL, 0);
	frame_raw(b, SEL_PARK(0), empty_commit, sizeof(empty_commit));
	status(b, SEL_PARK(0));
}

static void s_everything_every_slot(buf *b)
{
	for (uint8_t s = 0; s < 8; s++) {
		hello(b, SEL_PARK(s), MB_PROTOCOL_VERSION, "every");
		reserve(b, SEL_PARK(s), BASE, 128 * KIB);
		commit(b, SEL_PARK(s), BASE, 64 * KIB, s % 3);
		reset(b, SEL_PARK(s), BASE, 8 * KIB, 0);
		reset(b, SEL_PARK(s), BASE, 8 * KIB, 1);
		memory_load(b, SEL_PARK(s));
		status(b, SEL_PARK(s));
		watch(b, SEL_PARK(s), 0);
		decommit(b, SEL_PARK(s), BASE, 64 * KIB);
		release(b, SEL_PARK(s), BASE);
	}
}

/* Re-registration of a handed-back section: claims at every level (one cut at what the client
 * may hold, one outside its reservation), data booked first, refusals listed over AdoptDones,
 * and a second hand-back left to its deadline. */
static void s_readopt(buf *b)
{
	reserve(b, SEL_PARK(1), BASE + 512 * MIB, 32 * MIB);
	commit(b, SEL_PARK(1), BASE + 512 * MIB, 24 * MIB, 0);
	ctl(b, SEL_HANDBACK(0));
	claim(b, SEL_PARK(0), BASE, 64 * KIB, 2); /* before its reservation: refused */
	reserve(b, SEL_PARK(0), BASE, 128 * MIB);
	for (int i = 0; i < 40; i++)
		claim(b, SEL_PARK(0), BASE + (uint64_t)i * 8 * KIB, 4 * KIB, (uint32_t)(i % 3));
	claim(b, SEL_PARK(0), BASE + MIB, 40 * MIB, 0);
	claim(b, SEL_PARK(0), BASE + 48 * MIB, 40 * MIB, 2); /* cut at the budget */
	claim(b, SEL_PARK(0), BASE + 100 * MIB, MIB, 1);     /* refused whole */
	claim(b, SEL_PARK(0), BASE + 256 * MIB, MIB, 1);     /* outside */
	status(b, SEL_PARK(0));
	adopt_done(b, SEL_PARK(0));
	adopt_done(b, SEL_PARK(0));
	claim(b, SEL_PARK(0), BASE, 4 * KIB, 1); /* over: refused */
	decommit(b, SEL_PARK(0), BASE, 64 * KIB);
	ctl(b, SEL_HANDBACK(2));
	reserve(b, SEL_PARK(2), BASE, 4 * MIB);
	claim(b, SEL_PARK(2), BASE, 4 * MIB, 1);
	ctl(b, SEL_AUDIT);
	release(b, SEL_PARK(2), BASE);
	adopt_done(b, SEL_PARK(2));
}

static void dispatch_corpus(void)
{
	static const struct {
		const char *name;
		scenario fn;
	} scenarios[] = {
	    {"seed-basic", s_basic},
	    {"seed-lazy-hello", s_lazy_hello},
	    {"seed-never-connected", s_never_connected},
	    {"seed-protocol-errors", s_protocol_errors},
	    {"seed-bad-ranges", s_bad_ranges},
	    {"seed-reset-undo", s_reset_undo},
	    {"seed-reclaim", s_reclaim},
	    {"seed-park-granted", s_park_granted},
	    {"seed-park-timeout", s_park_timeout},
	    {"seed-park-abandoned", s_park_abandoned},
	    {"seed-park-released", s_park_released},
	    {"seed-no-park", s_no_park},
	    {"seed-watch", s_watch},
	    {"seed-same-pid", s_same_pid},
	    {"seed-groups", s_groups},
	    {"seed-many-reservations", s_many_reservations},
	    {"seed-garbage", s_garbage},
	    {"seed-every-slot", s_everything_every_slot},
	    {"seed-sync", s_sync},
	    {"seed-sync-reserves", s_sync_reserves},
	    {"seed-sync-frees", s_sync_frees},
	    {"seed-goodbye-resume", s_goodbye_resume},
	    {"seed-reattach", s_reattach},
	    {"seed-readopt", s_readopt},
	};
	buf *b = malloc(sizeof(*b));

	if (b == NULL)
		die("malloc");
	for (size_t i = 0; i < sizeof(scenarios) / sizeof(scenarios[0]); i++) {
		b->len = 0;
		next_id = 1;
		scenarios[i].fn(b);
		write_file("dispatch", scenarios[i].name, b->data, b->len);
	}
	free(b);
}

/* ---- snapshot seeds ---- */

typedef Membroker__Snapshot__V1__Snapshot pb_snapshot;
typedef Membroker__Snapshot__V1__Section pb_section;
typedef Membroker__Snapshot__V1__Region pb_region;
typedef Membroker__Snapshot__V1__PageRun pb_run;
typedef Membroker__Snapshot__V1__ResetRange pb_reset;

static void write_snapshot(const char *name, const pb_snapshot *m)
{
	static uint8_t out[65536];
	size_t n = membroker__snapshot__v1__snapshot__get_packed_size(m);

	if (n > sizeof(out)) {
		fprintf(stderr, "make_corpus: snapshot seed too long\n");
		exit(1);
	}
	membroker__snapshot__v1__snapshot__pack(m, out);
	write_file("snapshot", name, out, n);
}

static void snapshot_corpus(void)
{
	static uint8_t token[16] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16};
	pb_snapshot m = MEMBROKER__SNAPSHOT__V1__SNAPSHOT__INIT;
	pb_section a = MEMBROKER__SNAPSHOT__V1__SECTION__INIT, h = a, *secs[] = {&a, &h};
	pb_region r1 = MEMBROKER__SNAPSHOT__V1__REGION__INIT, r2 = r1, *regs[] = {&r1, &r2};
	pb_run run1 = MEMBROKER__SNAPSHOT__V1__PAGE_RUN__INIT, run2 = run1, run3 = run1;
	pb_run *runs1[] = {&run1, &run2}, *runs2[] = {&run3};
	pb_reset reset = MEMBROKER__SNAPSHOT__V1__RESET_RANGE__INIT, *resets[] = {&reset};

	m.budget = 64 * MIB;
	m.configured_budget = 64 * MIB;
	m.next_id = 1;
	m.section_size = 1ULL << 47;
	write_snapshot("seed-empty", &m);

	/* Section 3: 16 pages committed, 4 of them reset, 2 discarded, 1 MiB of credit. */
	run1 = (pb_run)MEMBROKER__SNAPSHOT__V1__PAGE_RUN__INIT;
	run1.first = 0;
	run1.count = 12;
	run1.state = 1;
	run2 = run1;
	run2.first = 12;
	run2.count = 4;
	run2.state = 3;
	run3 = run1;
	run3.first = 100;
	run3.count = 2;
	run3.state = 4;
	r1.address = BASE;
	r1.size = 64 * KIB * 16;
	r1.n_runs = 2;
	r1.runs = runs1;
	r2.address = BASE + 64 * MIB;
	r2.size = 4096 * 200;
	r2.n_runs = 1;
	r2.runs = runs2;
	a.id = 3;
	a.pid = 1000;
	a.uid = 1000;
	a.gid = 1000;
	a.name = "seed";
	a.inode = 42;
	a.fd_token.data = token;
	a.fd_token.len = sizeof(token);
	a.attach_token = a.fd_token;
	a.max_level = 2;
	a.credit = MIB;
	a.reserve_count = 3;
	a.reserve_bytes = MIB;
	a.n_regions = 2;
	a.regions = regs;
	a.committed = 16 * 4096;
	/* Section 7: restored after a crash, held without books. */
	h.id = 7;
	h.pid = 1001;
	h.uid = 1001;
	h.gid = 1001;
	h.name = "";
	h.fd_token = a.fd_token;
	h.attach_token = a.fd_token;
	h.held = 2 * MIB;
	reset.section_id = 3;
	reset.address = BASE + 12 * 4096;
	reset.pages = 4;
	reset.level = 2;
	m.next_id = 8;
	m.n_sections = 2;
	m.sections = secs;
	m.n_resets = 1;
	m.resets = resets;
	m.charged = 16 * 4096 + MIB + 2 * MIB;
	m.reclaimed_bytes = 8192;
	write_snapshot("seed-sections", &m);
	m.charged += 4096;
	write_snapshot("seed-charged-wrong", &m);
	m.charged -= 4096;

	/* Levels per page run, and claims of a section re-registering. */
	run1.level = 2;
	run2.level = 1;
	run3.level = 0;
	write_snapshot("seed-levels", &m);
	a.adopted = a.adopting = true;
	run3.state = 0x20; /* claimed */
	run3.level = 1;
	write_snapshot("seed-claims", &m);
}

int main(int argc, char **argv)
{
	if (argc != 2) {
		fprintf(stderr, "usage: %s OUTDIR\n", argv[0]);
		return 2;
	}
	outdir = argv[1];
	if (mkdir(outdir, 0755) != 0 && errno != EEXIST)
		die(outdir);
	wire_corpus();
	dispatch_corpus();
	snapshot_corpus();
	return 0;
}
