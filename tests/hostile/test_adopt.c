/*
 * test_adopt.c: adoption and re-attach cannot be forged.
 *
 * Adoption (a client handing its section back to a new broker and registering its commits again)
 * used to book whatever a client claimed, at eProcessCritical and whatever the budget: a process
 * that handed over a memfd it made itself and "re-registered" 1 GiB against a 256 MiB budget was
 * granted it, and a section whose owner never said AdoptDone was never audited. Now re-registered
 * commits are claims: one over the client's quotas or the budget is refused at once and its pages
 * punched out, and the others are booked through the broker's own books at AdoptDone or at its
 * deadline (what does not fit is refused and punched out), after which the section is audited
 * like any other.
 *
 * Re-attach after a dropped connection takes the section's one-time token, rotated at every
 * attach, from the section's own process: another process guessing or replaying tokens gets
 * nothing, burns nothing, and the owner re-attaches with its books intact.
 *
 * Asserted throughout: the total committed never exceeds the budget, and honest clients connect
 * and commit within mb_hostile_honest_bound (2 s on a quiet machine).
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <endian.h>
#include <fcntl.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "hostile.h"
#include "mb_fdpass.h"
#include "mb_wire.h"
#include "membroker.h"
#include "membroker.pb-c.h"
/* The victim's session id and attach token, to forge and replay them. */
#include "../../client/client_internal.h"

#define MiB	       ((uint64_t)1 << 20)
#define BUDGET	       (64 * MiB)
#define BASE	       ((uint64_t)0x10000000)
#define FORGED_WRITTEN (48 * MiB) /* data in the forged memfd */
#define ADOPT_FITS     (16 * MiB)
#define AUDIT_WAIT_MS  30000

typedef struct forger {
	char rpc[300], fd[300];
	int report; /* pipe to the test: the forger's results */
} forger;

/* What the forger reports. */
typedef struct forger_result {
	int32_t handed_over; /* status of the hand-over of its own memfd: 0 = accepted */
	int32_t huge;	     /* HRESULT of the claim of 1 GiB */
	uint64_t cut;	     /* where the broker cut that claim (the rest refused), 0: nowhere */
	int32_t again;	     /* HRESULT of a further claim of ADOPT_FITS */
	int32_t outside;     /* HRESULT of a claim outside its reservations */
	int32_t audited;     /* 1 once its section held no more than its claims */
} forger_result;

/* One request and its decoded reply on a hand-spoken connection; NULL on a transport failure. */
static mb_response *ask(int s, Membroker__V1__Request *req, uint32_t id)
{
	static unsigned char buf[65536];
	long n;

	if (mb_hostile_sp_send(s, req, id) != 0 ||
	    (n = mb_hostile_sp_recv(s, buf, sizeof(buf))) < 0)
		return NULL;
	return mb_wire_unpack_response(buf, (size_t)n);
}

/* A claim (Commit.adopt); *cut: where the broker cut it, if it did. */
static int32_t adopt_commit(int s, uint64_t address, uint64_t size, uint32_t id, uint64_t *cut)
{
	Membroker__V1__Request req = MEMBROKER__V1__REQUEST__INIT;
	Membroker__V1__Commit m = MEMBROKER__V1__COMMIT__INIT;
	mb_response *r;
	int32_t hr;

	m.address = address;
	m.size = size;
	m.level = eProcessCritical;
	m.adopt = true;
	req.body_case = MEMBROKER__V1__REQUEST__BODY_COMMIT;
	req.commit = &m;
	if ((r = ask(s, &req, id)) == NULL)
		return -1;
	hr = r->hresult;
	if (cut != NULL)
		*cut = r->adopt_done != NULL && r->adopt_done->n_refused == 1
			   ? r->adopt_done->refused[0]->address
			   : 0;
	mb_wire_free_response(r);
	return hr;
}

/* Hello, a memfd of its own with FORGED_WRITTEN bytes written, handed over as its "old section",
 * then claims of 1 GiB, of ADOPT_FITS more and of a range outside its reservation, and never
 * AdoptDone. Raw system calls only. */
static void forge(void *arg)
{
	const forger *f = arg;
	Membroker__V1__Request req = MEMBROKER__V1__REQUEST__INIT;
	Membroker__V1__Hello hello = MEMBROKER__V1__HELLO__INIT;
	Membroker__V1__Reserve res = MEMBROKER__V1__RESERVE__INIT;
	forger_result out = {-1, -1, 0, -1, -1, 0};
	uint8_t ask_fd[8 + MB_WIRE_TOKEN_LEN + 1];
	uint8_t status = 1;
	mb_response *r;
	int s = mb_hostile_sp_open(f->rpc);

	if (s < 0)
		_exit(2);
	hello.protocol_version = MB_PROTOCOL_VERSION;
	hello.name = "forger";
	req.body_case = MEMBROKER__V1__REQUEST__BODY_HELLO;
	req.hello = &hello;
	r = ask(s, &req, 1);
	if (r == NULL || r->hresult != 0 || r->hello == NULL ||
	    r->hello->fd_token.len != MB_WIRE_TOKEN_LEN)
		_exit(3);
	uint64_t id = htole64(r->hello->session_id);
	uint64_t size = r->hello->section_size;
	memcpy(ask_fd, &id, 8);
	memcpy(ask_fd + 8, r->hello->fd_token.data, MB_WIRE_TOKEN_LEN);
	ask_fd[8 + MB_WIRE_TOKEN_LEN] = 1; /* adopt */
	mb_wire_free_response(r);

	int mfd = memfd_create("forged", MFD_CLOEXEC | MFD_ALLOW_SEALING);
	if (mfd < 0 || ftruncate(mfd, (off_t)size) != 0 ||
	    fcntl(mfd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL) != 0)
		_exit(4);
	char *p = mmap(NULL, FORGED_WRITTEN, PROT_READ | PROT_WRITE, MAP_SHARED, mfd, (off_t)BASE);
	if (p == MAP_FAILED)
		_exit(5);
	memset(p, 0x5A, FORGED_WRITTEN);
	int fs = mb_hostile_connect(f->fd, SOCK_SEQPACKET);
	if (fs < 0 || mb_fdpass_send(fs, ask_fd, sizeof(ask_fd), mfd) != 0 ||
	    recv(fs, &status, 1, 0) != 1)
		_exit(6);
	close(fs);
	out.handed_over = status;

	res.address = BASE;
	res.size = 1024 * MiB;
	req.body_case = MEMBROKER__V1__REQUEST__BODY_RESERVE;
	req.reserve = &res;
	if ((r = ask(s, &req, 2)) == NULL || r->hresult != 0)
		_exit(7);
	mb_wire_free_response(r);
	out.huge = adopt_commit(s, BASE, 1024 * MiB, 3, &out.cut);
	out.again = adopt_commit(s, BASE + 512 * MiB, ADOPT_FITS, 4, NULL);
	out.outside = adopt_commit(s, BASE + 2048 * MiB, ADOPT_FITS, 5, NULL);
	/* No AdoptDone: wait until its section holds no more than what it may hold. */
	for (int waited = 0; waited < AUDIT_WAIT_MS; waited += 50) {
		struct stat st;
		if (fstat(mfd, &st) == 0 && (uint64_t)st.st_blocks * 512 <= ADOPT_FITS + 4096) {
			out.audited = 1;
			break;
		}
		usleep(50000);
	}
	if (write(f->report, &out, sizeof(out)) != sizeof(out))
		_exit(8);
	for (;;)
		pause();
}

static uint64_t total_committed(mb_client *observer)
{
	mb_session_status st;
	assert_int_equal(mb_get_session_status(observer, &st), S_OK);
	assert_true(st.total_committed <= st.budget);
	return st.total_committed;
}

static void test_forged_adoption(void **state)
{
	char conf[] = "/tmp/mbadopt.XXXXXX";
	int cfd = mkstemp(conf);
	const char *text = "[limits]\nclient_max = 16M\n";
	assert_true(cfd >= 0);
	assert_int_equal(write(cfd, text, strlen(text)), (ssize_t)strlen(text));
	close(cfd);
	const char *args[] = {"--budget", "64M", "--config", conf, NULL};
	mb_test_broker b;
	mb_client *observer;
	forger f;
	forger_result res;
	int pfd[2];
	long ms, worst = 0;

	(void)state;
	assert_int_equal(mb_test_broker_start(&b, args), 0);
	long bound = mb_hostile_honest_bound(b.address, 4 * MiB);
	snprintf(f.rpc, sizeof(f.rpc), "%s", mb_hostile_path(&b));
	mb_hostile_path_with(&b, ".fd", f.fd, sizeof(f.fd));
	assert_int_equal(pipe(pfd), 0);
	f.report = pfd[1];
	pid_t pid = mb_hostile_fork(forge, &f);
	assert_true(pid > 0);
	close(pfd[1]);
	assert_int_equal(mb_connect(b.address, &observer), S_OK);
	/* Sampled while the forger works, and honest clients served meanwhile. */
	for (int i = 0; i < 4; i++) {
		total_committed(observer);
		assert_int_equal(mb_hostile_honest(b.address, 4 * MiB, &ms), 0);
		if (ms > worst)
			worst = ms;
	}
	assert_int_equal(read(pfd[0], &res, sizeof(res)), sizeof(res));
	close(pfd[0]);
	printf("forged adoption: hand-over %d, 1 GiB claim 0x%08X cut at +%llu MiB, %llu MiB more "
	       "0x%08X, outside 0x%08X, audited %d; slowest honest connect+commit %ld ms\n",
	       res.handed_over, (unsigned)res.huge,
	       (unsigned long long)(res.cut > BASE ? (res.cut - BASE) / MiB : 0),
	       (unsigned long long)(ADOPT_FITS / MiB), (unsigned)res.again, (unsigned)res.outside,
	       res.audited, worst);
	/* A memfd it made itself gains it nothing: its claims stop at what it may ever hold
	 * (client_max, 16 MiB: the rest refused and punched at once), a claim outside its
	 * reservations is refused, what it claimed is booked like any commit once the AdoptDone
	 * deadline passed, and nothing it holds beyond that stays. */
	assert_int_equal(res.huge, S_OK);
	assert_int_equal(res.cut, BASE + ADOPT_FITS);
	assert_int_equal(res.again, E_OUTOFMEMORY);
	assert_int_equal(res.outside, MB_E_INVALID_ADDRESS);
	assert_int_equal(res.audited, 1);
	for (int waited = 0; total_committed(observer) != ADOPT_FITS && waited < AUDIT_WAIT_MS;
	     waited += 50)
		usleep(50000);
	assert_int_equal(total_committed(observer), ADOPT_FITS);
	printf("allowed: %ld ms (20 times the slowest without the attack, at least 2 s)\n", bound);
	assert_true(worst <= bound);
	mb_hostile_kill(pid);
	mb_disconnect(observer);
	assert_int_equal(mb_test_broker_stop(&b), 0);
	unlink(conf);
}

typedef struct guesser {
	char rpc[300];
	uint64_t victim;
	int report;
} guesser;

/* Asks for the victim's section with random tokens; reports how many times it was given it. */
static void guess(void *arg)
{
	const guesser *g = arg;
	int32_t given = 0;

	for (int i = 0; i < 200; i++) {
		Membroker__V1__Request req = MEMBROKER__V1__REQUEST__INIT;
		Membroker__V1__Hello hello = MEMBROKER__V1__HELLO__INIT;
		uint8_t token[MB_WIRE_TOKEN_LEN];
		int s = mb_hostile_sp_open(g->rpc);
		if (s < 0) {
			usleep(1000);
			continue;
		}
		if (getrandom(token, sizeof(token), 0) != (ssize_t)sizeof(token))
			_exit(2);
		hello.protocol_version = MB_PROTOCOL_VERSION;
		hello.resume_session = g->victim;
		hello.resume_token.data = token;
		hello.resume_token.len = sizeof(token);
		req.body_case = MEMBROKER__V1__REQUEST__BODY_HELLO;
		req.hello = &hello;
		mb_response *r = ask(s, &req, 1);
		if (r != NULL && r->hello != NULL &&
		    (r->hello->resumed || r->hello->session_id == g->victim))
			given++;
		mb_wire_free_response(r);
		close(s);
	}
	if (write(g->report, &given, sizeof(given)) != sizeof(given))
		_exit(3);
	for (;;)
		pause();
}

static bool call_succeeds(void *arg)
{
	DWORD load;
	SIZE_T avail;
	return mb_get_memory_load(arg, &load, &avail) == S_OK;
}

static void test_forged_reattach(void **state)
{
	const char *args[] = {"--budget", "64M", NULL};
	mb_test_broker b;
	mb_client *victim, *observer;
	mb_session_status st;
	guesser g;
	void *mem = NULL;
	uint8_t old_token[MB_WIRE_TOKEN_LEN];
	int32_t given = -1;
	int pfd[2];

	(void)state;
	assert_int_equal(mb_test_broker_start(&b, args), 0);
	assert_int_equal(mb_connect(b.address, &victim), S_OK);
	assert_int_equal(mb_connect(b.address, &observer), S_OK);
	assert_int_equal(mb_virtual_alloc(victim, NULL, 8 * MiB, MEM_RESERVE | MEM_COMMIT,
					  PAGE_READWRITE, eTaskCritical, &mem),
			 S_OK);
	memset(mem, 0x77, 8 * MiB);
	uint64_t before = total_committed(observer);

	/* The victim's connection drops; its section is detached, still charged. */
	memcpy(old_token, victim->attach_token, sizeof(old_token));
	nng_pipe p = NNG_PIPE_INITIALIZER;
	p.id = atomic_load(&victim->session_pipe);
	assert_int_equal(nng_pipe_close(p), 0);

	snprintf(g.rpc, sizeof(g.rpc), "%s", mb_hostile_path(&b));
	g.victim = victim->session_id;
	assert_int_equal(pipe(pfd), 0);
	g.report = pfd[1];
	pid_t pid = mb_hostile_fork(guess, &g);
	assert_true(pid > 0);
	close(pfd[1]);
	assert_int_equal(read(pfd[0], &given, sizeof(given)), sizeof(given));
	close(pfd[0]);
	mb_hostile_kill(pid);
	printf("forged re-attach: %d of 200 guesses given the victim's section\n", given);
	assert_int_equal(given, 0);
	assert_int_equal(total_committed(observer), before);

	/* The victim re-attaches with its own token, its memory and books as they were. */
	assert_true(mb_test_wait_for(call_succeeds, victim, 20000));
	assert_int_equal(victim->reattaches, 1);
	for (size_t i = 0; i < 8 * MiB; i += 4096)
		assert_int_equal(((uint8_t *)mem)[i], 0x77);
	assert_int_equal(mb_get_session_status(victim, &st), S_OK);
	assert_int_equal(st.committed, 8 * MiB);
	assert_int_equal(total_committed(observer), before);

	/* Its spent token, replayed by its own process on a connection of its own, is refused. */
	int s = mb_hostile_sp_open(mb_hostile_path(&b));
	assert_true(s >= 0);
	Membroker__V1__Request req = MEMBROKER__V1__REQUEST__INIT;
	Membroker__V1__Hello hello = MEMBROKER__V1__HELLO__INIT;
	hello.protocol_version = MB_PROTOCOL_VERSION;
	hello.resume_session = victim->session_id;
	hello.resume_token.data = old_token;
	hello.resume_token.len = sizeof(old_token);
	req.body_case = MEMBROKER__V1__REQUEST__BODY_HELLO;
	req.hello = &hello;
	mb_response *r = ask(s, &req, 1);
	assert_non_null(r);
	assert_non_null(r->hello);
	assert_false(r->hello->resumed);
	assert_int_not_equal(r->hello->session_id, victim->session_id);
	mb_wire_free_response(r);
	/* That connection's own new section goes with a Goodbye. */
	Membroker__V1__Goodbye bye = MEMBROKER__V1__GOODBYE__INIT;
	req.body_case = MEMBROKER__V1__REQUEST__BODY_GOODBYE;
	req.goodbye = &bye;
	r = ask(s, &req, 2);
	assert_non_null(r);
	assert_int_equal(r->hresult, S_OK);
	mb_wire_free_response(r);
	close(s);
	/* The victim still works, and its section is still its own. */
	assert_int_equal(mb_get_session_status(victim, &st), S_OK);
	assert_int_equal(st.committed, 8 * MiB);
	assert_int_equal(total_committed(observer), before);

	mb_disconnect(victim);
	assert_int_equal(total_committed(observer), 0);
	mb_disconnect(observer);
	assert_int_equal(mb_test_broker_stop(&b), 0);
}

int main(int argc, char **argv)
{
	mb_hostile_roles(argc, argv);
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_forged_adoption),
	    cmocka_unit_test(test_forged_reattach),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
