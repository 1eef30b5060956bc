/*
 * test_connect.c: connecting to the real membrokerd (started by harness.c), and the broker's
 * robustness against hostile peers: garbage, oversized messages, a foreign protocol version, abuse
 * of the section socket, a second broker on the same socket, a stale socket, forked children.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <endian.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <nng/nng.h>
#include <nng/protocol/reqrep0/req.h>

#include "harness.h"

#include "lsan_nng.h"
#include "mb_address.h"
#include "mb_fdpass.h"
#include "mb_wire.h"
#include "membroker.h"

#define MIB	   (1024ULL * 1024ULL)
#define BUDGET_ARG "256M"
#define BUDGET	   (256 * MIB)
#define GRAN	   ((SIZE_T)65536)

/* Generous limits: a loaded 2-core machine under ASan must never hit them. */
#define WAIT_MS	       30000
#define RAW_TIMEOUT_MS 5000

static const char *const broker_args[] = {"--budget", BUDGET_ARG, "--log-level", "debug", NULL};

/* ---- fixture ---- */

/* The broker of the running test, for diagnostics. */
static mb_test_broker *current;

static int setup(void **state)
{
	mb_test_broker *b = calloc(1, sizeof(*b));

	if (b == NULL || mb_test_broker_start(b, broker_args) != 0) {
		free(b);
		return -1;
	}
	*state = b;
	current = b;
	return 0;
}

static int teardown(void **state)
{
	mb_test_broker *b = *state;

	current = NULL;
	mb_test_broker_stop(b);
	free(b);
	return 0;
}

/* Shows the end of the broker's log on stderr (the directory is removed at teardown). */
static void show_broker_log(void)
{
	char cmd[600];

	if (current == NULL || current->log[0] == '\0')
		return;
	snprintf(cmd, sizeof(cmd), "echo '--- %s:' >&2; tail -n 40 '%s' >&2", current->log,
		 current->log);
	if (system(cmd) != 0)
		fprintf(stderr, "(cannot show %s)\n", current->log);
}

static bool broker_alive(const mb_test_broker *b)
{
	return b->pid > 0 && waitpid(b->pid, NULL, WNOHANG) == 0;
}

/* ---- helpers ---- */

static void get_status(mb_client *c, mb_session_status *st)
{
	memset(st, 0xff, sizeof(*st));
	assert_int_equal(mb_get_session_status(c, st), S_OK);
}

/* mb_connect that must succeed, with the library's reason when it does not. */
static mb_client *connect_ok(const char *address)
{
	mb_client *c = NULL;
	HRESULT hr = mb_connect(address, &c);

	if (hr != S_OK) {
		char why[sizeof(((mb_test_broker *)0)->address) + 700];

		snprintf(why, sizeof(why), "mb_connect(%s) = %s (0x%08x): %s",
			 address ? address : "NULL", mb_hresult_name(hr), (unsigned)hr,
			 mb_last_error());
		show_broker_log();
		fail_msg("%s", why);
	}
	assert_non_null(c);
	return c;
}

/* Reserves, commits, writes and reads back `size` bytes, then releases them. */
static HRESULT exercise(mb_client *c, SIZE_T size, unsigned char pattern)
{
	void *base = NULL, *p = NULL;
	HRESULT hr;

	hr = mb_virtual_alloc(c, NULL, size, MEM_RESERVE, PAGE_READWRITE, eTaskCritical, &base);
	if (hr != S_OK)
		return hr;
	if (base == NULL)
		return E_UNEXPECTED;
	hr = mb_virtual_alloc(c, base, size, MEM_COMMIT, PAGE_READWRITE, eTaskCritical, &p);
	if (hr != S_OK) {
		mb_virtual_free(c, base, 0, MEM_RELEASE);
		return hr;
	}
	if (p != base)
		return E_UNEXPECTED;
	for (SIZE_T i = 0; i < size; i++)
		if (((unsigned char *)p)[i] != 0)
			return E_UNEXPECTED; /* fresh commits read as zero */
	memset(p, pattern, size);
	for (SIZE_T i = 0; i < size; i += 4096)
		if (((unsigned char *)p)[i] != pattern)
			return E_UNEXPECTED;
	hr = mb_virtual_free(c, base, size, MEM_DECOMMIT);
	if (hr != S_OK)
		return hr;
	return mb_virtual_free(c, base, 0, MEM_RELEASE);
}

/* A client connected before something happened and one connected after must both work. */
static void check_still_serves(mb_test_broker *b, mb_client *before)
{
	mb_client *after = NULL;
	mb_session_status st;

	assert_true(broker_alive(b));
	if (before != NULL)
		assert_int_equal(exercise(before, 4 * GRAN, 0x5a), S_OK);
	after = connect_ok(b->address);
	assert_non_null(after);
	assert_int_equal(exercise(after, 2 * GRAN, 0xa5), S_OK);
	get_status(after, &st);
	assert_int_equal(st.budget, BUDGET);
	assert_int_equal(st.committed, 0);
	assert_int_equal(st.reservations, 0);
	mb_disconnect(after);
}

static uint64_t rng_state;

static uint64_t rng(void)
{
	rng_state ^= rng_state >> 12;
	rng_state ^= rng_state << 25;
	rng_state ^= rng_state >> 27;
	return rng_state * 0x2545F4914F6CDD1DULL;
}

/* A raw nng REQ socket to the broker, without the client library: sends whatever it is given. */
static void raw_open(nng_socket *s, const char *address)
{
	assert_int_equal(nng_req0_open(s), 0);
	/* Never resend: a dropped connection must show as a failed receive. */
	assert_int_equal(nng_socket_set_ms(*s, NNG_OPT_REQ_RESENDTIME, NNG_DURATION_INFINITE), 0);
	assert_int_equal(nng_socket_set_ms(*s, NNG_OPT_RECVTIMEO, RAW_TIMEOUT_MS), 0);
	assert_int_equal(nng_socket_set_ms(*s, NNG_OPT_SENDTIMEO, RAW_TIMEOUT_MS), 0);
	assert_int_equal(nng_dial(*s, address, NULL, 0), 0);
}

/* Sends bytes the broker cannot accept and expects no answer: the connection is dropped (or,
 * at worst, nothing comes back before the timeout). */
static void raw_expect_no_reply(nng_socket s, const void *data, size_t len)
{
	nng_msg *reply = NULL;
	int rv;

	assert_int_equal(nng_send(s, (void *)data, len, 0), 0);
	rv = nng_recvmsg(s, &reply, 0);
	if (rv == 0) {
		mb_response *r = mb_wire_unpack_response(nng_msg_body(reply), nng_msg_len(reply));
		fail_msg("the broker answered %zu bytes of garbage (hresult 0x%08x)", len,
			 r ? (unsigned)r->hresult : 0u);
	}
	assert_true(rv == NNG_ECONNRESET || rv == NNG_ETIMEDOUT || rv == NNG_ECLOSED ||
		    rv == NNG_ECONNSHUT);
}

/* ---- connecting ---- */

static void test_connect_handshake(void **state)
{
	mb_test_broker *b = *state;
	mb_client *c = NULL, *named = NULL;
	mb_session_status st;

	c = connect_ok(b->address);
	assert_non_null(c);
	get_status(c, &st);
	assert_true(st.sessions >= 1);
	assert_int_equal(st.budget, BUDGET);
	assert_int_equal(st.committed, 0);
	assert_int_equal(st.reserved, 0);
	assert_int_equal(st.reservations, 0);
	assert_int_equal(st.total_committed, 0);

	assert_int_equal(mb_connect_named(b->address, "test_connect", &named), S_OK);
	assert_non_null(named);
	get_status(c, &st);
	assert_true(st.sessions >= 2);
	mb_disconnect(named);
	mb_disconnect(c);
}

static void test_connect_null_client(void **state)
{
	mb_test_broker *b = *state;

	assert_int_equal(mb_connect(b->address, NULL), E_POINTER);
	assert_true(strlen(mb_last_error()) > 0);
	assert_int_equal(mb_connect_named(b->address, "x", NULL), E_POINTER);
}

static void test_connect_nobody_listens(void **state)
{
	mb_test_broker *b = *state;
	char address[300];
	char abstract[100];
	mb_client *c = (mb_client *)&c; /* must be reset to NULL */

	snprintf(address, sizeof(address), "ipc://%s/nobody.sock", b->dir);
	assert_int_equal(mb_connect(address, &c), HOST_E_CLRNOTAVAILABLE);
	assert_null(c);
	assert_true(strlen(mb_last_error()) > 0);

	/* A socket file that exists but is not a broker's. */
	snprintf(address, sizeof(address), "ipc://%s/broker.log", b->dir);
	c = (mb_client *)&c;
	assert_int_equal(mb_connect(address, &c), HOST_E_CLRNOTAVAILABLE);
	assert_null(c);
	assert_true(strlen(mb_last_error()) > 0);

	snprintf(abstract, sizeof(abstract), "abstract://mbtest-nobody-%d", (int)getpid());
	c = (mb_client *)&c;
	assert_int_equal(mb_connect(abstract, &c), HOST_E_CLRNOTAVAILABLE);
	assert_null(c);
	assert_true(strlen(mb_last_error()) > 0);
}

static void test_connect_bad_address(void **state)
{
	static const char *const bad[] = {"tcp://127.0.0.1:1",
					  "inproc://membroker",
					  "ipc://",
					  "",
					  "/run/membroker/membroker.sock",
					  "ws://localhost:1"};
	mb_client *c;

	(void)state;
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		c = (mb_client *)&c;
		assert_int_equal(mb_connect(bad[i], &c), E_INVALIDARG);
		assert_null(c);
		assert_true(strlen(mb_last_error()) > 0);
	}
}

static void test_connect_env_address(void **state)
{
	mb_test_broker *b = *state;
	const char *old = getenv(MB_ADDRESS_ENV);
	char *saved = old ? strdup(old) : NULL;
	mb_client *c = NULL, *direct = NULL;
	mb_session_status st;

	assert_int_equal(setenv(MB_ADDRESS_ENV, b->address, 1), 0);
	c = connect_ok(NULL);
	assert_non_null(c);
	/* It is this broker: a direct client's session is counted beside it. */
	direct = connect_ok(b->address);
	get_status(c, &st);
	assert_int_equal(st.budget, BUDGET);
	assert_int_equal(st.sessions, 2);
	mb_disconnect(direct);
	mb_disconnect(c);

	/* An invalid address in the environment is an argument error, not a hang. */
	assert_int_equal(setenv(MB_ADDRESS_ENV, "tcp://127.0.0.1:1", 1), 0);
	c = (mb_client *)&c;
	assert_int_equal(mb_connect(NULL, &c), E_INVALIDARG);
	assert_null(c);

	if (saved != NULL) {
		setenv(MB_ADDRESS_ENV, saved, 1);
		free(saved);
	} else {
		unsetenv(MB_ADDRESS_ENV);
	}
}

static void test_disconnect_null(void **state)
{
	(void)state;
	mb_disconnect(NULL);
	mb_disconnect(NULL);
}

/* ---- fork ---- */

typedef struct fork_ctx {
	mb_client *c;
	void *mem;
} fork_ctx;

/* Runs in the child: no cmocka here, only exit codes. */
static void child_uses_parent_client(void *arg)
{
	fork_ctx *f = arg;
	void *m = (void *)&m;
	DWORD load = 12345;
	SIZE_T avail = 12345;
	mb_session_status st;
	MEMORY_BASIC_INFORMATION mbi;
	SIZE_T written = 1;
	DWORD old = 0;

	if (mb_virtual_alloc(f->c, NULL, GRAN, MEM_RESERVE | MEM_COMMIT, PAGE_READWRITE,
			     eTaskCritical, &m) != HOST_E_CLRNOTAVAILABLE)
		_exit(10);
	if (m != NULL)
		_exit(11);
	if (mb_last_error()[0] == '\0')
		_exit(12);
	if (mb_get_memory_load(f->c, &load, &avail) != HOST_E_CLRNOTAVAILABLE)
		_exit(13);
	if (mb_get_session_status(f->c, &st) != HOST_E_CLRNOTAVAILABLE)
		_exit(14);
	if (mb_virtual_free(f->c, f->mem, 0, MEM_RELEASE) != HOST_E_CLRNOTAVAILABLE)
		_exit(15);
	if (mb_virtual_alloc(f->c, f->mem, GRAN, MEM_COMMIT, PAGE_READWRITE, eTaskCritical, &m) !=
	    HOST_E_CLRNOTAVAILABLE)
		_exit(16);
	/* Even the calls answered locally: the child has no mappings of the parent's. */
	if (mb_virtual_query(f->c, f->mem, &mbi, sizeof(mbi), &written) != HOST_E_CLRNOTAVAILABLE)
		_exit(17);
	if (written != 0)
		_exit(18);
	if (mb_virtual_protect(f->c, f->mem, GRAN, PAGE_READONLY, &old) != HOST_E_CLRNOTAVAILABLE)
		_exit(19);
	/* Frees the child's copy only; must not touch nng (which aborts after fork). */
	mb_disconnect(f->c);
	_exit(0);
}

static void test_fork_child(void **state)
{
	mb_test_broker *b = *state;
	fork_ctx f = {0};
	mb_session_status st;
	int status;
	DWORD load;
	SIZE_T avail;

	f.c = connect_ok(b->address);
	assert_int_equal(mb_virtual_alloc(f.c, NULL, 4 * GRAN, MEM_RESERVE | MEM_COMMIT,
					  PAGE_READWRITE, eTaskCritical, &f.mem),
			 S_OK);
	memset(f.mem, 0x77, 4 * GRAN);

	status = mb_test_in_child(child_uses_parent_client, &f);
	assert_true(WIFEXITED(status));
	if (WEXITSTATUS(status) != 0)
		fail_msg("the forked child failed check %d (see child_uses_parent_client)",
			 WEXITSTATUS(status));

	/* The parent's client is unaffected: memory, session and new calls. */
	assert_int_equal(((unsigned char *)f.mem)[4 * GRAN - 1], 0x77);
	get_status(f.c, &st);
	assert_int_equal(st.committed, 4 * GRAN);
	assert_int_equal(st.reservations, 1);
	assert_int_equal(mb_get_memory_load(f.c, &load, &avail), S_OK);
	assert_true(load >= 1);
	assert_int_equal(exercise(f.c, GRAN, 0x31), S_OK);
	assert_int_equal(mb_virtual_free(f.c, f.mem, 0, MEM_RELEASE), S_OK);
	get_status(f.c, &st);
	assert_int_equal(st.committed, 0);
	mb_disconnect(f.c);
}

/* ---- one socket, one broker ---- */

static void test_second_broker_refused(void **state)
{
	mb_test_broker *b = *state;
	mb_client *before = NULL;
	char log[300], text[4096];
	int status = 0, fd;
	pid_t pid, r;
	ssize_t n;

	before = connect_ok(b->address);
	snprintf(log, sizeof(log), "%s/second.log", b->dir);
	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		fd = open(log, O_WRONLY | O_CREAT | O_TRUNC, 0600);
		if (fd >= 0) {
			dup2(fd, 1);
			dup2(fd, 2);
			close(fd);
		}
		unsetenv("NOTIFY_SOCKET");
		execl(MEMBROKERD_PATH, MEMBROKERD_PATH, "--listen", b->address, "--budget", "64M",
		      (char *)NULL);
		_exit(127);
	}
	/* It must give up by itself; allow it plenty of time. */
	for (int i = 0; i < 60000 / 5; i++) {
		r = waitpid(pid, &status, WNOHANG);
		if (r == pid)
			break;
		usleep(5000);
	}
	if (r != pid) {
		kill(pid, SIGKILL);
		waitpid(pid, &status, 0);
		fail_msg("a second membrokerd on %s kept running", b->address);
	}
	assert_true(WIFEXITED(status));
	assert_int_not_equal(WEXITSTATUS(status), 0);
	assert_int_not_equal(WEXITSTATUS(status), 127);

	fd = open(log, O_RDONLY);
	assert_true(fd >= 0);
	n = read(fd, text, sizeof(text) - 1);
	close(fd);
	assert_true(n > 0);
	text[n] = '\0';
	if (strstr(text, "already serving") == NULL)
		fail_msg("second broker's output lacks \"already serving\": %s", text);

	/* The first broker still serves, old and new clients alike. */
	check_still_serves(b, before);
	mb_disconnect(before);
}

static void test_stale_socket(void **state)
{
	mb_test_broker *b = *state;
	char address[sizeof(b->address)];
	const char *path;
	struct stat st;
	mb_client *c = NULL;

	snprintf(address, sizeof(address), "%s", b->address);
	mb_test_broker_kill(b);
	/* SIGKILL leaves the socket file behind. */
	path = mb_address_ipc_path(address);
	assert_non_null(path);
	assert_int_equal(stat(path, &st), 0);
	assert_true(S_ISSOCK(st.st_mode));

	assert_int_equal(mb_test_broker_start_at(b, address, broker_args), 0);
	assert_string_equal(b->address, address);
	assert_true(broker_alive(b));
	c = connect_ok(address);
	assert_int_equal(exercise(c, 8 * GRAN, 0x42), S_OK);
	mb_disconnect(c);
	check_still_serves(b, NULL);
}

/* ---- hostile peers on the RPC socket ---- */

/*
 * A peer that connects to the RPC socket and hangs up before nng's protocol handshake: exactly
 * what nng's stale-socket probe in a second membrokerd does. The broker must go on serving.
 */
static void test_hangup_before_handshake(void **state)
{
	mb_test_broker *b = *state;
	mb_client *before = connect_ok(b->address);
	struct sockaddr_un sun = {.sun_family = AF_UNIX};
	const char *path = mb_address_ipc_path(b->address);
	int s;

	assert_non_null(path);
	assert_true(strlen(path) < sizeof(sun.sun_path));
	memcpy(sun.sun_path, path, strlen(path) + 1);
	s = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	assert_true(s >= 0);
	assert_int_equal(connect(s, (struct sockaddr *)&sun, sizeof(sun)), 0);
	close(s);

	check_still_serves(b, before);
	mb_disconnect(before);
}

static void test_garbage(void **state)
{
	mb_test_broker *b = *state;
	mb_client *before = NULL;
	uint8_t buf[512];
	nng_socket s;

	before = connect_ok(b->address);
	assert_int_equal(exercise(before, GRAN, 1), S_OK);

	raw_open(&s, b->address);
	rng_state = 0x243F6A8885A308D3ULL;
	for (int round = 0; round < 4; round++) {
		size_t len = 1 + (size_t)(rng() % (sizeof(buf) - 1));

		for (size_t i = 0; i < len; i++)
			buf[i] = (uint8_t)rng();
		buf[0] = 0x07; /* field number 0: never a valid protobuf, whatever follows */
		assert_null(mb_wire_unpack_request(buf, len));
		raw_expect_no_reply(s, buf, len);
	}
	nng_close(s);

	check_still_serves(b, before);
	mb_disconnect(before);
}

static void test_oversized(void **state)
{
	mb_test_broker *b = *state;
	mb_client *before = NULL;
	const size_t len = 100000;
	uint8_t *buf = malloc(len);
	nng_socket s;

	assert_non_null(buf);
	before = connect_ok(b->address);
	rng_state = 0x13198A2E03707344ULL;
	for (size_t i = 0; i < len; i++)
		buf[i] = (uint8_t)rng();
	raw_open(&s, b->address);
	raw_expect_no_reply(s, buf, len);
	/* Even a well-formed request padded past the limit. */
	{
		mb_request req = MEMBROKER__V1__REQUEST__INIT;
		Membroker__V1__MemoryLoad ml = MEMBROKER__V1__MEMORY_LOAD__INIT;
		nng_msg *msg = NULL, *reply = NULL;
		int rv;

		req.request_id = 1;
		req.body_case = MEMBROKER__V1__REQUEST__BODY_MEMORY_LOAD;
		req.memory_load = &ml;
		assert_int_equal(mb_wire_pack_request(&req, &msg), 0);
		/* field 100, length-delimited, 99,000 bytes: an unknown field protobuf-c keeps */
		assert_int_equal(nng_msg_append(msg, "\xa2\x06\xb8\x85\x06", 5), 0);
		assert_int_equal(nng_msg_append(msg, buf, 99000), 0);
		assert_null(mb_wire_unpack_request(nng_msg_body(msg), nng_msg_len(msg)));
		assert_int_equal(nng_sendmsg(s, msg, 0), 0);
		rv = nng_recvmsg(s, &reply, 0);
		if (rv == 0) {
			nng_msg_free(reply);
			fail_msg("the broker answered an oversized request");
		}
	}
	nng_close(s);
	free(buf);

	check_still_serves(b, before);
	mb_disconnect(before);
}

static void test_protocol_version(void **state)
{
	mb_test_broker *b = *state;
	mb_request req = MEMBROKER__V1__REQUEST__INIT;
	Membroker__V1__Hello h = MEMBROKER__V1__HELLO__INIT;
	nng_msg *msg = NULL, *reply = NULL;
	mb_response *r;
	nng_socket s;

	h.protocol_version = 999;
	h.name = "from the future";
	h.pid = (uint32_t)getpid();
	req.request_id = 4711;
	req.body_case = MEMBROKER__V1__REQUEST__BODY_HELLO;
	req.hello = &h;
	assert_int_equal(mb_wire_pack_request(&req, &msg), 0);

	raw_open(&s, b->address);
	assert_int_equal(nng_sendmsg(s, msg, 0), 0);
	assert_int_equal(nng_recvmsg(s, &reply, 0), 0);
	r = mb_wire_unpack_response(nng_msg_body(reply), nng_msg_len(reply));
	nng_msg_free(reply);
	assert_non_null(r);
	assert_int_equal(r->request_id, 4711);
	assert_int_equal((HRESULT)r->hresult, HOST_E_CLRNOTAVAILABLE);
	assert_int_equal(r->body_case, MEMBROKER__V1__RESPONSE__BODY__NOT_SET);
	if (strstr(r->detail, "999") == NULL || strstr(r->detail, "version") == NULL)
		fail_msg("detail does not name the version: \"%s\"", r->detail);
	mb_wire_free_response(r);
	nng_close(s);

	check_still_serves(b, NULL);
}

/* ---- hostile peers on the section socket ---- */

static int fd_socket_connect(const char *address)
{
	struct sockaddr_un sun;
	socklen_t len;
	struct timeval tv = {.tv_sec = 30, .tv_usec = 0};
	int s;

	assert_int_equal(mb_address_fd_socket(address, &sun, &len), 0);
	s = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
	assert_true(s >= 0);
	assert_int_equal(setsockopt(s, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv)), 0);
	assert_int_equal(setsockopt(s, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv)), 0);
	assert_int_equal(connect(s, (struct sockaddr *)&sun, len), 0);
	return s;
}

/* Sends one hand-over datagram (optionally with a descriptor) and expects status 1, no fd. */
static void fd_socket_expect_refusal(const char *address, const void *data, size_t len, int send_fd)
{
	int s = fd_socket_connect(address);
	uint8_t status = 0xee;
	int fd = -2;
	ssize_t n;

	assert_int_equal(mb_fdpass_send(s, data, len, send_fd), 0);
	n = mb_fdpass_recv(s, &status, 1, &fd);
	assert_int_equal(n, 1);
	assert_int_equal(status, 1);
	assert_int_equal(fd, -1);
	close(s);
}

static void test_fd_socket_abuse(void **state)
{
	mb_test_broker *b = *state;
	mb_client *before = NULL;
	uint8_t req[8 + MB_WIRE_TOKEN_LEN + 8];
	int devnull;

	before = connect_ok(b->address);

	/* Wrong tokens for the first session ids (the live client's among them). */
	for (uint64_t id = 0; id < 8; id++) {
		uint64_t le = htole64(id);
		memcpy(req, &le, 8);
		memset(req + 8, (int)(0x10 + id), MB_WIRE_TOKEN_LEN);
		fd_socket_expect_refusal(b->address, req, 8 + MB_WIRE_TOKEN_LEN, -1);
	}
	/* Too short, too long. */
	fd_socket_expect_refusal(b->address, req, 3, -1);
	fd_socket_expect_refusal(b->address, req, 8 + MB_WIRE_TOKEN_LEN - 1, -1);
	fd_socket_expect_refusal(b->address, req, sizeof(req), -1);
	/* A descriptor pushed at the broker along with a wrong token. */
	devnull = open("/dev/null", O_RDONLY | O_CLOEXEC);
	assert_true(devnull >= 0);
	fd_socket_expect_refusal(b->address, req, 8 + MB_WIRE_TOKEN_LEN, devnull);
	close(devnull);
	/* A peer that connects and hangs up without a word. */
	close(fd_socket_connect(b->address));

	check_still_serves(b, before);
	mb_disconnect(before);
}

/* ---- one client, many threads ---- */

#define THREADS 8
#define CYCLES	200

typedef struct thread_arg {
	mb_client *c;
	int index;
	HRESULT first_failure;
	int failed_step;
	int done;
} thread_arg;

static void *cycle_thread(void *p)
{
	thread_arg *a = p;
	unsigned char pattern = (unsigned char)(0x10 + a->index);

	for (int i = 0; i < CYCLES; i++) {
		void *base = NULL, *mem = NULL;
		HRESULT hr;

		hr = mb_virtual_alloc(a->c, NULL, GRAN, MEM_RESERVE, PAGE_READWRITE, eTaskCritical,
				      &base);
		if (hr != S_OK || base == NULL) {
			a->first_failure = hr != S_OK ? hr : E_UNEXPECTED;
			a->failed_step = 1;
			return NULL;
		}
		hr = mb_virtual_alloc(a->c, base, GRAN, MEM_COMMIT, PAGE_READWRITE, eTaskCritical,
				      &mem);
		if (hr != S_OK || mem != base) {
			a->first_failure = hr != S_OK ? hr : E_UNEXPECTED;
			a->failed_step = 2;
			return NULL;
		}
		if (((volatile unsigned char *)mem)[GRAN - 1] != 0) {
			a->first_failure = E_UNEXPECTED;
			a->failed_step = 3;
			return NULL;
		}
		memset(mem, pattern, GRAN);
		if (((volatile unsigned char *)mem)[GRAN / 2] != pattern) {
			a->first_failure = E_UNEXPECTED;
			a->failed_step = 4;
			return NULL;
		}
		hr = mb_virtual_free(a->c, base, GRAN, MEM_DECOMMIT);
		if (hr != S_OK) {
			a->first_failure = hr;
			a->failed_step = 5;
			return NULL;
		}
		hr = mb_virtual_free(a->c, base, 0, MEM_RELEASE);
		if (hr != S_OK) {
			a->first_failure = hr;
			a->failed_step = 6;
			return NULL;
		}
		a->done++;
	}
	return NULL;
}

static void test_threads_share_one_client(void **state)
{
	mb_test_broker *b = *state;
	thread_arg args[THREADS];
	pthread_t threads[THREADS];
	mb_client *c = NULL;
	mb_session_status st;

	c = connect_ok(b->address);
	for (int i = 0; i < THREADS; i++) {
		args[i] = (thread_arg){.c = c, .index = i, .first_failure = S_OK};
		assert_int_equal(pthread_create(&threads[i], NULL, cycle_thread, &args[i]), 0);
	}
	for (int i = 0; i < THREADS; i++)
		assert_int_equal(pthread_join(threads[i], NULL), 0);
	for (int i = 0; i < THREADS; i++) {
		if (args[i].first_failure != S_OK)
			fail_msg("thread %d failed at step %d of cycle %d: %s (0x%08x)", i,
				 args[i].failed_step, args[i].done,
				 mb_hresult_name(args[i].first_failure),
				 (unsigned)args[i].first_failure);
		assert_int_equal(args[i].done, CYCLES);
	}
	get_status(c, &st);
	assert_int_equal(st.committed, 0);
	assert_int_equal(st.reservations, 0);
	assert_int_equal(st.reserved, 0);
	assert_int_equal(st.total_committed, 0);
	mb_disconnect(c);
}

/* ---- memory comes back ---- */

typedef struct total_ctx {
	mb_client *c;
	uint64_t want_total;
	uint32_t want_sessions;
	HRESULT hr;
} total_ctx;

static bool total_is(void *arg)
{
	total_ctx *t = arg;
	mb_session_status st;

	t->hr = mb_get_session_status(t->c, &st);
	return t->hr == S_OK && st.total_committed == t->want_total &&
	       st.sessions == t->want_sessions;
}

static void test_disconnect_returns_memory(void **state)
{
	mb_test_broker *b = *state;
	mb_client *a = NULL, *watcher = NULL;
	mb_session_status st;
	void *mem = NULL;
	DWORD load;
	SIZE_T avail, avail_before;
	total_ctx t;

	watcher = connect_ok(b->address);
	assert_int_equal(mb_get_memory_load(watcher, &load, &avail_before), S_OK);
	assert_int_equal(load, 0);

	a = connect_ok(b->address);
	assert_int_equal(mb_virtual_alloc(a, NULL, 16 * MIB, MEM_RESERVE | MEM_COMMIT,
					  PAGE_READWRITE, eTaskCritical, &mem),
			 S_OK);
	memset(mem, 0xcc, 16 * MIB);
	get_status(watcher, &st);
	assert_int_equal(st.total_committed, 16 * MIB);
	assert_int_equal(st.committed, 0);
	assert_int_equal(st.sessions, 2);
	assert_int_equal(mb_get_memory_load(watcher, &load, &avail), S_OK);
	assert_int_equal(load, 7); /* 16/256 = 6.25%, rounded up */
	assert_int_equal(avail, avail_before - 16 * MIB);

	mb_disconnect(a);
	/* The broker learns of the disconnect asynchronously: wait for it. */
	t = (total_ctx){.c = watcher, .want_total = 0, .want_sessions = 1};
	if (!mb_test_wait_for(total_is, &t, WAIT_MS))
		fail_msg("memory of a disconnected client did not return (last hr 0x%08x)",
			 (unsigned)t.hr);
	assert_int_equal(mb_get_memory_load(watcher, &load, &avail), S_OK);
	assert_int_equal(load, 0);
	assert_int_equal(avail, avail_before);
	mb_disconnect(watcher);
}

#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)

int main(void)
{
	const struct CMUnitTest tests[] = {
	    T(test_connect_handshake),
	    T(test_connect_null_client),
	    T(test_connect_nobody_listens),
	    T(test_connect_bad_address),
	    T(test_connect_env_address),
	    T(test_disconnect_null),
	    T(test_fork_child),
	    T(test_second_broker_refused),
	    T(test_stale_socket),
	    T(test_hangup_before_handshake),
	    T(test_garbage),
	    T(test_oversized),
	    T(test_protocol_version),
	    T(test_fd_socket_abuse),
	    T(test_threads_share_one_client),
	    T(test_disconnect_returns_memory),
	};

	signal(SIGPIPE, SIG_IGN);
	return cmocka_run_group_tests(tests, NULL, NULL);
}
