/*
 * mb_bench.c: the membroker benchmark (make bench).
 *
 *   mb_bench [--quick] [--json FILE]
 *
 * One run starts its own membrokerd (MEMBROKERD_PATH) and a bare nng REP echo server on temporary
 * ipc:// sockets and measures, against baselines taken in the same run:
 *   - baselines: nng REQ/REP echo of a packed commit request's size (ctx+aio like libmembroker,
 *     and synchronous nng_sendmsg/nng_recvmsg), memfd and anonymous mmap + touch 64 KiB + munmap;
 *   - libmembroker operations: reserve, commit, decommit, release (64 KiB), VirtualQuery,
 *     VirtualProtect, GetMemoryLoad, commit+touch+decommit: median and p99;
 *   - throughput of 1, 4, 16, 64 client processes doing commit+decommit, vs the echo;
 *   - commit latency with 100, 10,000 and 100,000 live reservations;
 *   - reclaim time of a SIGKILLed client's commits;
 *   - broker RSS per live reservation.
 * It prints a table, writes JSON, and reports each target of the brief as met or not met (it never
 * fails because a target is missed; it exits non-zero only when something does not work).
 *
 * nng aborts in a child forked after nng started, so every child process (broker, echo server,
 * workers) is started with posix_spawn, and the workers are this program again (--worker KIND),
 * talking to the parent over two pipes at fixed descriptors.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <spawn.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/utsname.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <nng/nng.h>
#include <nng/protocol/reqrep0/rep.h>
#include <nng/protocol/reqrep0/req.h>

#include "membroker.h"
#include "mb_wire.h"

#ifndef MEMBROKERD_PATH
#error "MEMBROKERD_PATH must name the membrokerd binary"
#endif

extern char **environ;

#define KIB	((size_t)1024)
#define MIB	(KIB * 1024)
#define SECTION (64 * KIB)
#define PAGE	4096
/* Descriptors of a worker: it reads one byte from GO_FD to start, writes reports to REPORT_FD. */
#define GO_FD	  200
#define REPORT_FD 201
/* Contexts of the echo server: the broker's default (--contexts 64). */
#define ECHO_CONTEXTS	     64
#define ROUNDS		     10
#define MAX_REPS	     9
#define TIMEOUT_MS	     30000
#define RECLAIM_RESERVATIONS 64
#define RECLAIM_SIZE	     MIB

/* ---------------------------------------------------------------- utilities */

static uint64_t now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static void die(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));

static void cleanup(void);

static void die(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	fprintf(stderr, "mb_bench: ");
	vfprintf(stderr, fmt, ap);
	fprintf(stderr, "\n");
	va_end(ap);
	cleanup();
	exit(1);
}

static void check_hr(HRESULT hr, const char *what)
{
	if (hr != S_OK)
		die("%s: %s (%s)", what, mb_hresult_name(hr), mb_last_error());
}

static void check_nng(int rv, const char *what)
{
	if (rv != 0)
		die("%s: %s", what, nng_strerror(rv));
}

static uint64_t xorshift(uint64_t *s)
{
	uint64_t x = *s;
	x ^= x << 13;
	x ^= x >> 7;
	x ^= x << 17;
	return *s = x;
}

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
	return x < y ? -1 : x > y;
}

/* A series of latency samples in ns. */
typedef struct series {
	const char *key;   /* JSON key */
	const char *label; /* table label */
	uint64_t *v;
	size_t n, cap;
	bool sorted;
} series;

static void series_add(series *s, uint64_t ns)
{
	if (s->n == s->cap) {
		s->cap = s->cap ? s->cap * 2 : 1024;
		s->v = realloc(s->v, s->cap * sizeof(*s->v));
		if (s->v == NULL)
			die("out of memory");
	}
	s->v[s->n++] = ns;
	s->sorted = false;
}

static uint64_t series_pct(series *s, double pct)
{
	if (s->n == 0)
		return 0;
	if (!s->sorted) {
		qsort(s->v, s->n, sizeof(*s->v), cmp_u64);
		s->sorted = true;
	}
	size_t i = (size_t)(pct / 100.0 * (double)s->n);
	return s->v[i >= s->n ? s->n - 1 : i];
}

static uint64_t series_median(series *s)
{
	return series_pct(s, 50);
}

static uint64_t series_p99(series *s)
{
	return series_pct(s, 99);
}

static uint64_t series_mean(const series *s)
{
	uint64_t sum = 0;

	for (size_t i = 0; i < s->n; i++)
		sum += s->v[i];
	return s->n ? sum / s->n : 0;
}

static long rss_kib(pid_t pid)
{
	char path[64], line[256];
	long kib = -1;
	FILE *f;

	snprintf(path, sizeof(path), "/proc/%d/status", (int)pid);
	if ((f = fopen(path, "r")) == NULL)
		return -1;
	while (fgets(line, sizeof(line), f) != NULL)
		if (sscanf(line, "VmRSS: %ld kB", &kib) == 1)
			break;
	fclose(f);
	return kib;
}

/* Writes or reads exactly n bytes; false on EOF, error or (for reads) timeout. */
static bool write_all(int fd, const void *buf, size_t n)
{
	const char *p = buf;
	while (n > 0) {
		ssize_t w = write(fd, p, n);
		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0)
			return false;
		p += w;
		n -= (size_t)w;
	}
	return true;
}

static bool read_all(int fd, void *buf, size_t n, int timeout_ms)
{
	char *p = buf;
	uint64_t deadline = now_ns() + (uint64_t)timeout_ms * 1000000u;
	while (n > 0) {
		struct pollfd pfd = {.fd = fd, .events = POLLIN};
		uint64_t now = now_ns();
		if (now >= deadline)
			return false;
		int r = poll(&pfd, 1, (int)((deadline - now) / 1000000u) + 1);
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0)
			return false;
		ssize_t got = read(fd, p, n);
		if (got < 0 && errno == EINTR)
			continue;
		if (got <= 0)
			return false;
		p += got;
		n -= (size_t)got;
	}
	return true;
}

/* ---------------------------------------------------------------- workers */

/* What a worker writes to REPORT_FD (smaller than PIPE_BUF, so never interleaved). */
enum { REPORT_READY = 1, REPORT_RESULT = 2, REPORT_FAILED = 3 };
typedef struct report {
	uint32_t kind;
	uint32_t pid;
	uint64_t count;	     /* round trips completed */
	uint64_t elapsed_ns; /* of the measured window */
	uint64_t errors;
	uint64_t cpu_ns; /* user+system time of the worker (all threads) in the window */
} report;

static uint64_t self_cpu_ns(void)
{
	struct rusage ru;
	getrusage(RUSAGE_SELF, &ru);
	return (uint64_t)(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) * 1000000000u +
	       (uint64_t)(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) * 1000u;
}

static uint64_t worker_cpu_start;

static void worker_report(uint32_t kind, uint64_t count, uint64_t elapsed, uint64_t errors)
{
	report r = {.kind = kind,
		    .pid = (uint32_t)getpid(),
		    .count = count,
		    .elapsed_ns = elapsed,
		    .errors = errors,
		    .cpu_ns = kind == REPORT_RESULT ? self_cpu_ns() - worker_cpu_start : 0};
	if (!write_all(REPORT_FD, &r, sizeof(r)))
		_exit(2);
}

static void worker_fail(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));

static void worker_fail(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	fprintf(stderr, "mb_bench worker %d: ", (int)getpid());
	vfprintf(stderr, fmt, ap);
	fprintf(stderr, "\n");
	va_end(ap);
	worker_report(REPORT_FAILED, 0, 0, 1);
	_exit(1);
}

static void worker_wait_go(void)
{
	char c;
	ssize_t r;
	while ((r = read(GO_FD, &c, 1)) < 0 && errno == EINTR)
		;
	if (r != 1)
		_exit(0); /* the parent went away */
	worker_cpu_start = self_cpu_ns();
}

/* One request/reply on a REQ context, as libmembroker does it (transport.c: mb_client_call_on). */
static int echo_call_aio(nng_ctx ctx, nng_aio *aio, const void *payload, size_t len)
{
	nng_msg *msg;
	int rv;

	if ((rv = nng_msg_alloc(&msg, len)) != 0)
		return rv;
	memcpy(nng_msg_body(msg), payload, len);
	nng_aio_set_timeout(aio, TIMEOUT_MS);
	nng_aio_set_msg(aio, msg);
	nng_ctx_send(ctx, aio);
	nng_aio_wait(aio);
	if ((rv = nng_aio_result(aio)) != 0) {
		nng_msg_free(nng_aio_get_msg(aio));
		nng_aio_set_msg(aio, NULL);
		return rv;
	}
	nng_ctx_recv(ctx, aio);
	nng_aio_wait(aio);
	if ((rv = nng_aio_result(aio)) != 0)
		return rv;
	msg = nng_aio_get_msg(aio);
	rv = nng_msg_len(msg) == len ? 0 : NNG_EPROTO;
	nng_msg_free(msg);
	return rv;
}

/* The same with the synchronous socket calls. */
static int echo_call_sync(nng_socket sock, const void *payload, size_t len)
{
	nng_msg *msg;
	int rv;

	if ((rv = nng_msg_alloc(&msg, len)) != 0)
		return rv;
	memcpy(nng_msg_body(msg), payload, len);
	if ((rv = nng_sendmsg(sock, msg, 0)) != 0) {
		nng_msg_free(msg);
		return rv;
	}
	if ((rv = nng_recvmsg(sock, &msg, 0)) != 0)
		return rv;
	rv = nng_msg_len(msg) == len ? 0 : NNG_EPROTO;
	nng_msg_free(msg);
	return rv;
}

static int req_open(const char *url, nng_socket *sock)
{
	int rv;
	if ((rv = nng_req0_open(sock)) != 0)
		return rv;
	nng_socket_set_ms(*sock, NNG_OPT_REQ_RESENDTIME, NNG_DURATION_INFINITE);
	nng_socket_set_ms(*sock, NNG_OPT_RECVTIMEO, TIMEOUT_MS);
	nng_socket_set_ms(*sock, NNG_OPT_SENDTIMEO, TIMEOUT_MS);
	nng_socket_set_size(*sock, NNG_OPT_RECVMAXSZ, MB_WIRE_MAX_MESSAGE);
	if ((rv = nng_dial(*sock, url, NULL, 0)) != 0)
		nng_close(*sock);
	return rv;
}

/* The bare REP echo server: nng's async pattern with the broker's number of contexts. */
typedef struct echo_work {
	nng_aio *aio;
	nng_ctx ctx;
	bool sending;
} echo_work;

static void echo_cb(void *arg)
{
	echo_work *w = arg;
	int rv = nng_aio_result(w->aio);

	if (!w->sending) {
		if (rv == NNG_ECLOSED || rv == NNG_ECANCELED)
			return;
		if (rv == 0) {
			nng_msg *msg = nng_aio_get_msg(w->aio);
			nng_aio_set_msg(w->aio, msg);
			nng_aio_set_timeout(w->aio, 5000);
			w->sending = true;
			nng_ctx_send(w->ctx, w->aio);
			return;
		}
	} else if (rv != 0) {
		nng_msg_free(nng_aio_get_msg(w->aio));
		nng_aio_set_msg(w->aio, NULL);
		if (rv == NNG_ECLOSED)
			return;
	}
	w->sending = false;
	nng_aio_set_timeout(w->aio, NNG_DURATION_INFINITE);
	nng_ctx_recv(w->ctx, w->aio);
}

static int worker_echo_server(const char *url)
{
	static echo_work works[ECHO_CONTEXTS];
	nng_socket sock;
	sigset_t set;
	int sig;

	sigemptyset(&set);
	sigaddset(&set, SIGTERM);
	sigaddset(&set, SIGINT);
	pthread_sigmask(SIG_BLOCK, &set, NULL); /* before nng starts its threads */
	if (nng_rep0_open(&sock) != 0)
		worker_fail("cannot open a REP socket");
	nng_socket_set_size(sock, NNG_OPT_RECVMAXSZ, MB_WIRE_MAX_MESSAGE);
	if (nng_listen(sock, url, NULL, 0) != 0)
		worker_fail("cannot listen on %s", url);
	for (int i = 0; i < ECHO_CONTEXTS; i++) {
		if (nng_aio_alloc(&works[i].aio, echo_cb, &works[i]) != 0 ||
		    nng_ctx_open(&works[i].ctx, sock) != 0)
			worker_fail("cannot set up the contexts");
		nng_ctx_recv(works[i].ctx, works[i].aio);
	}
	worker_report(REPORT_READY, 0, 0, 0);
	sigwait(&set, &sig);
	_exit(0); /* nothing to flush; the socket goes with the process */
}

static int worker_echo_client(const char *url, long size, long duration_ms)
{
	uint8_t payload[MB_WIRE_MAX_MESSAGE];
	nng_socket sock;
	nng_ctx ctx;
	nng_aio *aio;
	uint64_t count = 0, errors = 0;

	if (size <= 0 || size > (long)sizeof(payload))
		worker_fail("bad payload size %ld", size);
	memset(payload, 0x5a, (size_t)size);
	if (req_open(url, &sock) != 0 || nng_ctx_open(&ctx, sock) != 0 ||
	    nng_aio_alloc(&aio, NULL, NULL) != 0)
		worker_fail("cannot connect to the echo server at %s", url);
	worker_report(REPORT_READY, 0, 0, 0);
	worker_wait_go();
	uint64_t start = now_ns(), end = start + (uint64_t)duration_ms * 1000000u, t;
	do {
		if (echo_call_aio(ctx, aio, payload, (size_t)size) == 0)
			count++;
		else
			errors++;
	} while ((t = now_ns()) < end);
	worker_report(REPORT_RESULT, count, t - start, errors);
	_exit(0);
}

static int worker_mb_client(const char *url, long duration_ms)
{
	mb_client *c;
	void *base, *p;
	uint64_t count = 0, errors = 0;

	if (mb_connect(url, &c) != S_OK)
		worker_fail("cannot connect to the broker: %s", mb_last_error());
	if (mb_virtual_alloc(c, NULL, SECTION, MEM_RESERVE, PAGE_READWRITE, eTaskCritical, &base) !=
	    S_OK)
		worker_fail("reserve: %s", mb_last_error());
	worker_report(REPORT_READY, 0, 0, 0);
	worker_wait_go();
	uint64_t start = now_ns(), end = start + (uint64_t)duration_ms * 1000000u, t;
	do {
		if (mb_virtual_alloc(c, base, SECTION, MEM_COMMIT, PAGE_READWRITE, eTaskCritical,
				     &p) == S_OK)
			count++;
		else
			errors++;
		if (mb_virtual_free(c, base, SECTION, MEM_DECOMMIT) == S_OK)
			count++;
		else
			errors++;
	} while ((t = now_ns()) < end);
	worker_report(REPORT_RESULT, count, t - start, errors);
	mb_disconnect(c);
	_exit(0);
}

/* Holds RECLAIM_RESERVATIONS committed and touched reservations until it is killed. */
static int worker_victim(const char *url, long reservations, long size)
{
	mb_client *c;
	void *p;

	if (mb_connect(url, &c) != S_OK)
		worker_fail("cannot connect to the broker: %s", mb_last_error());
	for (long i = 0; i < reservations; i++) {
		if (mb_virtual_alloc(c, NULL, (SIZE_T)size, MEM_RESERVE | MEM_COMMIT,
				     PAGE_READWRITE, eTaskCritical, &p) != S_OK)
			worker_fail("reserve+commit: %s", mb_last_error());
		memset(p, 0xa5, (size_t)size);
	}
	worker_report(REPORT_READY, 0, 0, 0);
	worker_wait_go(); /* never comes: SIGKILL does */
	_exit(0);
}

/* The reclaim baseline: a single-threaded process without nng holding `size` bytes of touched
 * memfd memory, mapped shared as a section is. */
static int worker_plain_victim(long size)
{
	int fd = memfd_create("mb_bench_victim", MFD_CLOEXEC);
	void *p;

	if (fd < 0 || ftruncate(fd, (off_t)size) != 0)
		worker_fail("memfd: %s", strerror(errno));
	p = mmap(NULL, (size_t)size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	if (p == MAP_FAILED)
		worker_fail("mmap: %s", strerror(errno));
	memset(p, 0xa5, (size_t)size);
	worker_report(REPORT_READY, 0, 0, 0);
	worker_wait_go();
	_exit(0);
}

static int worker_main(int argc, char **argv)
{
	/* argv: --worker KIND URL P1 P2 */
	if (argc < 6)
		return 2;
	const char *kind = argv[2], *url = argv[3];
	long p1 = strtol(argv[4], NULL, 10), p2 = strtol(argv[5], NULL, 10);

	if (strcmp(kind, "echo-server") == 0)
		return worker_echo_server(url);
	if (strcmp(kind, "echo-client") == 0)
		return worker_echo_client(url, p1, p2);
	if (strcmp(kind, "mb-client") == 0)
		return worker_mb_client(url, p1);
	if (strcmp(kind, "victim") == 0)
		return worker_victim(url, p1, p2);
	if (strcmp(kind, "plain-victim") == 0)
		return worker_plain_victim(p1);
	fprintf(stderr, "mb_bench: unknown worker %s\n", kind);
	return 2;
}

/* ---------------------------------------------------------------- child processes */

static char self_exe[PATH_MAX];
static char tmp_dir[64];
static char broker_url[128], echo_url[128], broker_log[128];
static char credit_url[128], credit_log[128];
static pid_t broker_pid = -1, echo_pid = -1, credit_pid = -1;

/* Pids of running workers, killed on the way out. */
static pid_t live_workers[512];
static int nlive;

static void stop_pid(pid_t *pid, int sig)
{
	if (*pid <= 0)
		return;
	kill(*pid, sig);
	for (int i = 0; i < 2000; i++) {
		pid_t r = waitpid(*pid, NULL, WNOHANG);
		if (r == *pid || (r < 0 && errno != EINTR))
			break;
		if (i == 1999) {
			kill(*pid, SIGKILL);
			waitpid(*pid, NULL, 0);
		}
		usleep(5000);
	}
	*pid = -1;
}

static void cleanup(void)
{
	for (int i = 0; i < nlive; i++)
		if (live_workers[i] > 0) {
			kill(live_workers[i], SIGKILL);
			waitpid(live_workers[i], NULL, 0);
		}
	nlive = 0;
	stop_pid(&echo_pid, SIGTERM);
	stop_pid(&broker_pid, SIGTERM);
	stop_pid(&credit_pid, SIGTERM);
	if (tmp_dir[0] != '\0') {
		char path[256];
		const char *files[] = {"mb.sock",	 "mb.sock.fd",	      "mb.sock.admin",
				       "echo.sock",	 "broker.log",	      "credit.sock",
				       "credit.sock.fd", "credit.sock.admin", "credit.log"};
		for (size_t i = 0; i < sizeof(files) / sizeof(files[0]); i++) {
			snprintf(path, sizeof(path), "%s/%s", tmp_dir, files[i]);
			unlink(path);
		}
		rmdir(tmp_dir);
		tmp_dir[0] = '\0';
	}
}

static void on_signal(int sig)
{
	/* Only async-signal-safe calls: kill the children we know by pid, then go. */
	for (int i = 0; i < nlive; i++)
		if (live_workers[i] > 0)
			kill(live_workers[i], SIGKILL);
	if (echo_pid > 0)
		kill(echo_pid, SIGKILL);
	if (broker_pid > 0)
		kill(broker_pid, SIGTERM);
	_exit(128 + sig);
}

/* A pair of pipes to a group of workers: go (parent writes) and report (parent reads). */
typedef struct channel {
	int go_r, go_w, rep_r, rep_w;
} channel;

static void channel_open(channel *ch)
{
	int go[2], rep[2];
	if (pipe2(go, O_CLOEXEC) != 0 || pipe2(rep, O_CLOEXEC) != 0)
		die("pipe: %s", strerror(errno));
	ch->go_r = go[0];
	ch->go_w = go[1];
	ch->rep_r = rep[0];
	ch->rep_w = rep[1];
}

/* After the last spawn: the children hold their ends, the parent keeps its own. */
static void channel_children_started(channel *ch)
{
	close(ch->go_r);
	close(ch->rep_w);
	ch->go_r = ch->rep_w = -1;
}

static void channel_close(channel *ch)
{
	int *fds[] = {&ch->go_r, &ch->go_w, &ch->rep_r, &ch->rep_w};
	for (int i = 0; i < 4; i++)
		if (*fds[i] >= 0) {
			close(*fds[i]);
			*fds[i] = -1;
		}
}

static pid_t spawn_worker(channel *ch, const char *kind, const char *url, long p1, long p2)
{
	posix_spawn_file_actions_t fa;
	char a1[32], a2[32];
	char *argv[] = {self_exe, (char *)"--worker", (char *)kind, (char *)url, a1, a2, NULL};
	pid_t pid;
	int rv;

	snprintf(a1, sizeof(a1), "%ld", p1);
	snprintf(a2, sizeof(a2), "%ld", p2);
	posix_spawn_file_actions_init(&fa);
	/* dup2 clears FD_CLOEXEC on the copies; the originals close at exec. */
	posix_spawn_file_actions_adddup2(&fa, ch->go_r, GO_FD);
	posix_spawn_file_actions_adddup2(&fa, ch->rep_w, REPORT_FD);
	rv = posix_spawn(&pid, self_exe, &fa, NULL, argv, environ);
	posix_spawn_file_actions_destroy(&fa);
	if (rv != 0)
		die("cannot start a %s worker: %s", kind, strerror(rv));
	if (nlive < (int)(sizeof(live_workers) / sizeof(live_workers[0])))
		live_workers[nlive++] = pid;
	return pid;
}

static void reap_worker(pid_t pid, bool force)
{
	if (force)
		kill(pid, SIGKILL);
	while (waitpid(pid, NULL, 0) < 0 && errno == EINTR)
		;
	for (int i = 0; i < nlive; i++)
		if (live_workers[i] == pid) {
			live_workers[i] = live_workers[--nlive];
			break;
		}
}

static void expect_report(channel *ch, uint32_t kind, report *r, const char *what)
{
	if (!read_all(ch->rep_r, r, sizeof(*r), TIMEOUT_MS))
		die("%s: no report from a worker within %d ms", what, TIMEOUT_MS);
	if (r->kind != kind)
		die("%s: worker %u failed (see its message above)", what, r->pid);
}

/* Starts membrokerd on url with the given commit credit ("0": every commit is a round trip). */
static void start_broker(pid_t *pid, char *url, const char *log, const char *credit)
{
	posix_spawn_file_actions_t fa;
	char *argv[] = {(char *)MEMBROKERD_PATH,
			(char *)"--listen",
			url,
			(char *)"--budget",
			(char *)"8G",
			(char *)"--commit-credit",
			(char *)credit,
			(char *)"--log-level",
			(char *)"warning",
			NULL};
	int rv;

	posix_spawn_file_actions_init(&fa);
	posix_spawn_file_actions_addopen(&fa, 1, log, O_WRONLY | O_CREAT | O_APPEND, 0600);
	posix_spawn_file_actions_adddup2(&fa, 1, 2);
	rv = posix_spawn(pid, MEMBROKERD_PATH, &fa, NULL, argv, environ);
	posix_spawn_file_actions_destroy(&fa);
	if (rv != 0) {
		*pid = -1;
		die("cannot start %s: %s", MEMBROKERD_PATH, strerror(rv));
	}
}

static mb_client *connect_to(pid_t *pid, const char *url, const char *log, int timeout_ms)
{
	uint64_t deadline = now_ns() + (uint64_t)timeout_ms * 1000000u;
	mb_client *c = NULL;

	for (;;) {
		if (mb_connect(url, &c) == S_OK)
			return c;
		int status;
		if (waitpid(*pid, &status, WNOHANG) == *pid) {
			*pid = -1;
			die("membrokerd exited (status %d); its log is %s", status, log);
		}
		if (now_ns() > deadline)
			die("membrokerd does not answer on %s: %s", url, mb_last_error());
		usleep(2000);
	}
}

static mb_client *connect_broker(int timeout_ms)
{
	return connect_to(&broker_pid, broker_url, broker_log, timeout_ms);
}

/* ---------------------------------------------------------------- the measurements */

typedef struct config {
	bool quick;
	const char *json;
	int iters;	  /* samples per latency series */
	int tput_ms;	  /* duration of one throughput run */
	int tput_reps;	  /* runs of each kind per process count */
	int scale_iters;  /* samples per reservation count */
	size_t scale_max; /* largest reservation count */
	int reclaim_trials;
} config;

enum {
	S_TIMER,
	S_ECHO_AIO,
	S_ECHO_SYNC,
	S_MEMFD,
	S_ANON,
	S_MPROTECT,
	S_RESERVE,
	S_COMMIT,
	S_DECOMMIT,
	S_RELEASE,
	S_QUERY,
	S_PROTECT,
	S_PROTECT_SAME,
	S_LOAD,
	S_CYCLE,
	S_CR_COMMIT,
	S_CR_DECOMMIT,
	S_CR_CYCLE,
	S_CR_CLIMB,
	S_COUNT
};

static series lat[S_COUNT] = {
    [S_TIMER] = {.key = "timer", .label = "clock_gettime (timer overhead)"},
    [S_ECHO_AIO] = {.key = "nng_echo_ctx_aio", .label = "nng REQ/REP echo, ctx+aio (reference)"},
    [S_ECHO_SYNC] = {.key = "nng_echo_sync", .label = "nng REQ/REP echo, nng_sendmsg/recvmsg"},
    [S_MEMFD] = {.key = "memfd_mmap_touch_munmap", .label = "memfd mmap+touch 64K+munmap+punch"},
    [S_ANON] = {.key = "anon_mmap_touch_munmap", .label = "anon mmap+touch 64K+munmap"},
    [S_MPROTECT] = {.key = "mprotect_64k", .label = "bare mprotect 64K (RW<->RO)"},
    [S_RESERVE] = {.key = "reserve_64k", .label = "mb reserve 64K"},
    [S_COMMIT] = {.key = "commit_64k", .label = "mb commit 64K"},
    [S_DECOMMIT] = {.key = "decommit_64k", .label = "mb decommit 64K"},
    [S_RELEASE] = {.key = "release_64k", .label = "mb release 64K"},
    [S_QUERY] = {.key = "virtual_query", .label = "mb VirtualQuery"},
    [S_PROTECT] = {.key = "virtual_protect", .label = "mb VirtualProtect 64K"},
    [S_PROTECT_SAME] = {.key = "virtual_protect_same",
			.label = "mb VirtualProtect 64K to its protection"},
    [S_LOAD] = {.key = "get_memory_load", .label = "mb GetMemoryLoad"},
    [S_CYCLE] = {.key = "commit_touch_decommit_64k", .label = "mb commit+touch 64K+decommit"},
    [S_CR_COMMIT] = {.key = "credit_commit_64k", .label = "mb commit 64K, credit"},
    [S_CR_DECOMMIT] = {.key = "credit_decommit_64k", .label = "mb decommit 64K, credit"},
    [S_CR_CYCLE] = {.key = "credit_commit_touch_decommit_64k",
		    .label = "mb commit+touch 64K+decommit, credit"},
    [S_CR_CLIMB] = {.key = "credit_commit_climbing_64k",
		    .label = "mb commit 64K climbing, credit, Syncs incl."},
};

/* Commits through a reservation without decommits: how often a round trip was still needed. */
static uint64_t climb_commits, climb_local, climb_syncs;

/* CPU per round trip, summed over every run of one kind. */
typedef struct cpu_acc {
	double client_ns, server_ns, round_trips;
} cpu_acc;

typedef struct tput {
	int procs;
	double mb_ops, echo_ops; /* round trips per second, all processes together (median run) */
	double mb_min, mb_max, echo_min, echo_max;
	cpu_acc mb_cpu, echo_cpu;
	uint64_t mb_errors, echo_errors;
	double credit_ops; /* commits+decommits per second with commit credit (one run) */
	cpu_acc credit_cpu;
	uint64_t credit_errors;
} tput;

static const int tput_procs[] = {1, 4, 16, 64};
#define NTPUT ((int)(sizeof(tput_procs) / sizeof(tput_procs[0])))
static tput tputs[NTPUT];

#define NSCALE 3
static size_t scale_counts[NSCALE];
static series scale_commit[NSCALE], scale_decommit[NSCALE];
static series scale_reserve_tail; /* reserve latency for the last 1,000 of the largest count */
static long broker_rss_before, broker_rss_after, client_rss_before, client_rss_after;

/* Reclaim: SIGKILL to budget back; to the victim's pidfd readable (it has exited); from then to
 * budget back; baseline: SIGKILL of a plain process with the same memory to its exit. */
static series reclaim, reclaim_exit, reclaim_broker, plain_exit;
static uint64_t reclaim_polls_total;

static size_t payload_len;
static uint8_t payload[MB_WIRE_MAX_MESSAGE];

/* The echo payload: a commit request exactly as the client packs it. */
static void make_payload(void)
{
	Membroker__V1__Request req = MEMBROKER__V1__REQUEST__INIT;
	Membroker__V1__Commit commit = MEMBROKER__V1__COMMIT__INIT;
	nng_msg *msg = NULL;

	commit.address = 0x7f3a12340000u; /* a typical arena address (47 bits) */
	commit.size = SECTION;
	commit.level = eTaskCritical;
	req.body_case = MEMBROKER__V1__REQUEST__BODY_COMMIT;
	req.commit = &commit;
	req.request_id = 100000; /* a request id well into a run */
	check_nng(mb_wire_pack_request(&req, &msg), "packing a commit request");
	payload_len = nng_msg_len(msg);
	memcpy(payload, nng_msg_body(msg), payload_len);
	nng_msg_free(msg);
}

static void touch(volatile uint8_t *p, size_t len)
{
	for (size_t i = 0; i < len; i += PAGE)
		p[i] = 1;
}

/* Size of the reservation the climbing series commits its way through, 64 KiB at a time. */
#define CLIMB_SIZE ((size_t)64 << 20)

/* c talks to the broker without commit credit, cc to the one with the default credit. */
static void bench_latency(const config *cfg, mb_client *c, mb_client *cc)
{
	void *ccyc, *climb;
	size_t climb_next = 0;
	mb_session_status st0, st1;
	nng_socket esock, ssock;
	nng_ctx ectx;
	nng_aio *eaio;
	void *cyc, *prot, *p, *anon;
	MEMORY_BASIC_INFORMATION mbi;
	SIZE_T written;
	DWORD old, load;
	SIZE_T avail;
	int memfd;
	int per = cfg->iters / ROUNDS;

	check_nng(req_open(echo_url, &esock), "connecting to the echo server");
	check_nng(req_open(echo_url, &ssock), "connecting to the echo server");
	check_nng(nng_ctx_open(&ectx, esock), "nng_ctx_open");
	check_nng(nng_aio_alloc(&eaio, NULL, NULL), "nng_aio_alloc");
	anon = mmap(NULL, SECTION, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (anon == MAP_FAILED)
		die("mmap: %s", strerror(errno));
	touch(anon, SECTION);
	memfd = memfd_create("mb_bench", MFD_CLOEXEC);
	if (memfd < 0 || ftruncate(memfd, (off_t)SECTION) != 0)
		die("memfd: %s", strerror(errno));

	check_hr(
	    mb_virtual_alloc(c, NULL, SECTION, MEM_RESERVE, PAGE_READWRITE, eTaskCritical, &cyc),
	    "reserve");
	check_hr(mb_virtual_alloc(c, NULL, SECTION, MEM_RESERVE | MEM_COMMIT, PAGE_READWRITE,
				  eTaskCritical, &prot),
		 "reserve+commit");
	touch(prot, SECTION);
	check_hr(
	    mb_virtual_alloc(cc, NULL, SECTION, MEM_RESERVE, PAGE_READWRITE, eTaskCritical, &ccyc),
	    "reserve");
	check_hr(mb_virtual_alloc(cc, NULL, CLIMB_SIZE, MEM_RESERVE, PAGE_READWRITE, eTaskCritical,
				  &climb),
		 "reserve");

	/* Warm-up: connections, page tables, caches, the broker's allocator. */
	for (int i = 0; i < 500; i++) {
		check_nng(echo_call_aio(ectx, eaio, payload, payload_len), "echo");
		check_nng(echo_call_sync(ssock, payload, payload_len), "echo");
		check_hr(mb_virtual_alloc(c, cyc, SECTION, MEM_COMMIT, PAGE_READWRITE,
					  eTaskCritical, &p),
			 "commit");
		check_hr(mb_virtual_free(c, cyc, SECTION, MEM_DECOMMIT), "decommit");
		check_hr(mb_virtual_alloc(cc, ccyc, SECTION, MEM_COMMIT, PAGE_READWRITE,
					  eTaskCritical, &p),
			 "commit");
		check_hr(mb_virtual_free(cc, ccyc, SECTION, MEM_DECOMMIT), "decommit");
	}
	check_hr(mb_get_session_status(cc, &st0), "status");

	/* Rounds interleave every series, so drift (frequency, other load) hits them alike. */
	for (int round = 0; round < ROUNDS; round++) {
		uint64_t t0, t1, t2;
		int i;

		for (i = 0; i < per; i++) {
			t0 = now_ns();
			t1 = now_ns();
			series_add(&lat[S_TIMER], t1 - t0);
		}
		for (i = 0; i < per; i++) {
			t0 = now_ns();
			check_nng(echo_call_aio(ectx, eaio, payload, payload_len), "echo");
			series_add(&lat[S_ECHO_AIO], now_ns() - t0);
		}
		for (i = 0; i < per; i++) {
			t0 = now_ns();
			check_nng(echo_call_sync(ssock, payload, payload_len), "echo");
			series_add(&lat[S_ECHO_SYNC], now_ns() - t0);
		}
		for (i = 0; i < per; i++) {
			t0 = now_ns();
			void *m = mmap(NULL, SECTION, PROT_READ | PROT_WRITE, MAP_SHARED, memfd, 0);
			if (m == MAP_FAILED)
				die("mmap: %s", strerror(errno));
			touch(m, SECTION);
			munmap(m, SECTION);
			/* Punched, so each touch allocates, as a fresh commit does. */
			fallocate(memfd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 0, SECTION);
			series_add(&lat[S_MEMFD], now_ns() - t0);
		}
		for (i = 0; i < per; i++) {
			t0 = now_ns();
			void *m = mmap(NULL, SECTION, PROT_READ | PROT_WRITE,
				       MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
			if (m == MAP_FAILED)
				die("mmap: %s", strerror(errno));
			touch(m, SECTION);
			munmap(m, SECTION);
			series_add(&lat[S_ANON], now_ns() - t0);
		}
		for (i = 0; i < per; i++) {
			int np = (i & 1) ? PROT_READ | PROT_WRITE : PROT_READ;
			t0 = now_ns();
			int rv = mprotect(anon, SECTION, np);
			series_add(&lat[S_MPROTECT], now_ns() - t0);
			if (rv != 0)
				die("mprotect: %s", strerror(errno));
		}
		for (i = 0; i < per; i++) {
			void *r;
			t0 = now_ns();
			check_hr(mb_virtual_alloc(c, NULL, SECTION, MEM_RESERVE, PAGE_READWRITE,
						  eTaskCritical, &r),
				 "reserve");
			t1 = now_ns();
			check_hr(mb_virtual_free(c, r, 0, MEM_RELEASE), "release");
			t2 = now_ns();
			series_add(&lat[S_RESERVE], t1 - t0);
			series_add(&lat[S_RELEASE], t2 - t1);
		}
		for (i = 0; i < per; i++) {
			t0 = now_ns();
			check_hr(mb_virtual_alloc(c, cyc, SECTION, MEM_COMMIT, PAGE_READWRITE,
						  eTaskCritical, &p),
				 "commit");
			t1 = now_ns();
			check_hr(mb_virtual_free(c, cyc, SECTION, MEM_DECOMMIT), "decommit");
			t2 = now_ns();
			series_add(&lat[S_COMMIT], t1 - t0);
			series_add(&lat[S_DECOMMIT], t2 - t1);
		}
		for (i = 0; i < per; i++) {
			t0 = now_ns();
			check_hr(mb_virtual_alloc(c, cyc, SECTION, MEM_COMMIT, PAGE_READWRITE,
						  eTaskCritical, &p),
				 "commit");
			touch(p, SECTION);
			check_hr(mb_virtual_free(c, cyc, SECTION, MEM_DECOMMIT), "decommit");
			series_add(&lat[S_CYCLE], now_ns() - t0);
		}
		/* Commit credit: the same operations against the broker that grants it. */
		for (i = 0; i < per; i++) {
			t0 = now_ns();
			check_hr(mb_virtual_alloc(cc, ccyc, SECTION, MEM_COMMIT, PAGE_READWRITE,
						  eTaskCritical, &p),
				 "commit");
			t1 = now_ns();
			check_hr(mb_virtual_free(cc, ccyc, SECTION, MEM_DECOMMIT), "decommit");
			t2 = now_ns();
			series_add(&lat[S_CR_COMMIT], t1 - t0);
			series_add(&lat[S_CR_DECOMMIT], t2 - t1);
		}
		for (i = 0; i < per; i++) {
			t0 = now_ns();
			check_hr(mb_virtual_alloc(cc, ccyc, SECTION, MEM_COMMIT, PAGE_READWRITE,
						  eTaskCritical, &p),
				 "commit");
			touch(p, SECTION);
			check_hr(mb_virtual_free(cc, ccyc, SECTION, MEM_DECOMMIT), "decommit");
			series_add(&lat[S_CR_CYCLE], now_ns() - t0);
		}
		for (i = 0; i < per; i++) {
			if (climb_next == CLIMB_SIZE / SECTION) {
				/* Start over in a fresh reservation (not timed). */
				check_hr(mb_virtual_free(cc, climb, 0, MEM_RELEASE), "release");
				check_hr(mb_virtual_alloc(cc, NULL, CLIMB_SIZE, MEM_RESERVE,
							  PAGE_READWRITE, eTaskCritical, &climb),
					 "reserve");
				climb_next = 0;
			}
			t0 = now_ns();
			check_hr(mb_virtual_alloc(cc, (uint8_t *)climb + climb_next * SECTION,
						  SECTION, MEM_COMMIT, PAGE_READWRITE,
						  eTaskCritical, &p),
				 "commit");
			series_add(&lat[S_CR_CLIMB], now_ns() - t0);
			climb_next++;
			climb_commits++;
		}
		for (i = 0; i < per; i++) {
			t0 = now_ns();
			HRESULT hr = mb_virtual_query(c, (uint8_t *)prot + PAGE, &mbi, sizeof(mbi),
						      &written);
			series_add(&lat[S_QUERY], now_ns() - t0);
			check_hr(hr, "VirtualQuery");
		}
		for (i = 0; i < per; i++) {
			DWORD np = (i & 1) ? PAGE_READWRITE : PAGE_READONLY;
			t0 = now_ns();
			HRESULT hr = mb_virtual_protect(c, prot, SECTION, np, &old);
			series_add(&lat[S_PROTECT], now_ns() - t0);
			check_hr(hr, "VirtualProtect");
		}
		check_hr(mb_virtual_protect(c, prot, SECTION, PAGE_READWRITE, &old),
			 "VirtualProtect");
		for (i = 0; i < per; i++) {
			t0 = now_ns();
			HRESULT hr = mb_virtual_protect(c, prot, SECTION, PAGE_READWRITE, &old);
			series_add(&lat[S_PROTECT_SAME], now_ns() - t0);
			check_hr(hr, "VirtualProtect");
		}
		for (i = 0; i < per; i++) {
			t0 = now_ns();
			check_hr(mb_get_memory_load(c, &load, &avail), "GetMemoryLoad");
			series_add(&lat[S_LOAD], now_ns() - t0);
		}
	}
	check_hr(mb_get_session_status(cc, &st1), "status");
	/* Every credit series is counted here; the climbing one is the only one that can run out
	 * of credit, so the round trips it needed are the Syncs and the commits not served
	 * locally. */
	climb_local = st1.local_commits - st0.local_commits;
	climb_syncs = st1.syncs - st0.syncs;
	check_hr(mb_virtual_free(cc, climb, 0, MEM_RELEASE), "release");
	check_hr(mb_virtual_free(cc, ccyc, 0, MEM_RELEASE), "release");
	check_hr(mb_virtual_free(c, cyc, 0, MEM_RELEASE), "release");
	check_hr(mb_virtual_free(c, prot, 0, MEM_RELEASE), "release");
	close(memfd);
	munmap(anon, SECTION);
	nng_aio_free(eaio);
	nng_ctx_close(ectx);
	nng_close(esock);
	nng_close(ssock);
}

/* n processes of one kind, started together, for cfg->tput_ms; returns round trips per second. */
/* CPU time of another process (all threads), from /proc/PID/stat (clock ticks). */
static uint64_t proc_cpu_ns(pid_t pid)
{
	char path[64], buf[1024];
	unsigned long long ut = 0, st = 0;
	FILE *f;

	snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
	if ((f = fopen(path, "r")) == NULL)
		return 0;
	size_t n = fread(buf, 1, sizeof(buf) - 1, f);
	fclose(f);
	buf[n] = '\0';
	char *p = strrchr(buf, ')'); /* the command may contain spaces */
	if (p == NULL ||
	    sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu", &ut, &st) != 2)
		return 0;
	return (ut + st) * (1000000000ull / (unsigned long long)sysconf(_SC_CLK_TCK));
}

static double run_tput(const config *cfg, const char *kind, const char *url, pid_t server, int n,
		       uint64_t *errors, cpu_acc *cpu)
{
	pid_t pids[64];
	channel ch;
	report r;
	double rate = 0;

	channel_open(&ch);
	for (int i = 0; i < n; i++)
		pids[i] = strcmp(kind, "echo-client") == 0
			      ? spawn_worker(&ch, kind, url, (long)payload_len, cfg->tput_ms)
			      : spawn_worker(&ch, kind, url, cfg->tput_ms, 0);
	channel_children_started(&ch);
	for (int i = 0; i < n; i++)
		expect_report(&ch, REPORT_READY, &r, kind);
	char go[64];
	memset(go, 'g', sizeof(go));
	uint64_t srv0 = proc_cpu_ns(server);
	if (!write_all(ch.go_w, go, (size_t)n))
		die("cannot start the workers");
	*errors = 0;
	for (int i = 0; i < n; i++) {
		expect_report(&ch, REPORT_RESULT, &r, kind);
		if (r.elapsed_ns > 0)
			rate += (double)r.count * 1e9 / (double)r.elapsed_ns;
		*errors += r.errors;
		cpu->client_ns += (double)r.cpu_ns;
		cpu->round_trips += (double)r.count;
	}
	cpu->server_ns += (double)(proc_cpu_ns(server) - srv0);
	for (int i = 0; i < n; i++)
		reap_worker(pids[i], false);
	channel_close(&ch);
	return rate;
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return x < y ? -1 : x > y;
}

/* Echo and membroker runs alternate, cfg->tput_reps times each; the median run of each counts. */
static void bench_throughput(const config *cfg)
{
	for (int i = 0; i < NTPUT; i++) {
		double echo[MAX_REPS], mb[MAX_REPS];
		uint64_t err;
		int n = cfg->tput_reps;

		tputs[i].procs = tput_procs[i];
		for (int rep = 0; rep < n; rep++) {
			echo[rep] = run_tput(cfg, "echo-client", echo_url, echo_pid, tput_procs[i],
					     &err, &tputs[i].echo_cpu);
			tputs[i].echo_errors += err;
			mb[rep] = run_tput(cfg, "mb-client", broker_url, broker_pid, tput_procs[i],
					   &err, &tputs[i].mb_cpu);
			tputs[i].mb_errors += err;
			fprintf(stderr, "  throughput %2d procs: echo %.0f/s, membroker %.0f/s\n",
				tput_procs[i], echo[rep], mb[rep]);
		}
		/* The same workers against the broker that grants commit credit: one run. */
		tputs[i].credit_ops = run_tput(cfg, "mb-client", credit_url, credit_pid,
					       tput_procs[i], &err, &tputs[i].credit_cpu);
		tputs[i].credit_errors += err;
		fprintf(stderr, "  throughput %2d procs: membroker with credit %.0f/s\n",
			tput_procs[i], tputs[i].credit_ops);
		qsort(echo, (size_t)n, sizeof(double), cmp_double);
		qsort(mb, (size_t)n, sizeof(double), cmp_double);
		tputs[i].echo_ops = echo[n / 2];
		tputs[i].mb_ops = mb[n / 2];
		tputs[i].echo_min = echo[0];
		tputs[i].echo_max = echo[n - 1];
		tputs[i].mb_min = mb[0];
		tputs[i].mb_max = mb[n - 1];
	}
}

static void bench_scaling(const config *cfg, mb_client *c)
{
	size_t max = cfg->scale_max, have = 0;
	void **res = calloc(max, sizeof(*res));
	uint64_t seed = 0x9e3779b97f4a7c15u;
	void *p;

	if (res == NULL)
		die("out of memory");
	scale_counts[0] = 100;
	scale_counts[1] = max / 10;
	scale_counts[2] = max;
	broker_rss_before = rss_kib(broker_pid);
	client_rss_before = rss_kib(getpid());
	for (int k = 0; k < NSCALE; k++) {
		while (have < scale_counts[k]) {
			uint64_t t0 = now_ns();
			check_hr(mb_virtual_alloc(c, NULL, SECTION, MEM_RESERVE, PAGE_READWRITE,
						  eTaskCritical, &res[have]),
				 "reserve (scaling)");
			if (k == NSCALE - 1 && have >= max - 1000)
				series_add(&scale_reserve_tail, now_ns() - t0);
			have++;
		}
		if (k == NSCALE - 1) {
			broker_rss_after = rss_kib(broker_pid);
			client_rss_after = rss_kib(getpid());
		}
		/* Commit and decommit a reservation picked at random among those held. */
		for (int i = 0; i < 200; i++) {
			void *r = res[xorshift(&seed) % have];
			check_hr(mb_virtual_alloc(c, r, SECTION, MEM_COMMIT, PAGE_READWRITE,
						  eTaskCritical, &p),
				 "commit (scaling)");
			check_hr(mb_virtual_free(c, r, SECTION, MEM_DECOMMIT),
				 "decommit (scaling)");
		}
		for (int i = 0; i < cfg->scale_iters; i++) {
			void *r = res[xorshift(&seed) % have];
			uint64_t t0 = now_ns(), t1, t2;
			check_hr(mb_virtual_alloc(c, r, SECTION, MEM_COMMIT, PAGE_READWRITE,
						  eTaskCritical, &p),
				 "commit (scaling)");
			t1 = now_ns();
			check_hr(mb_virtual_free(c, r, SECTION, MEM_DECOMMIT),
				 "decommit (scaling)");
			t2 = now_ns();
			series_add(&scale_commit[k], t1 - t0);
			series_add(&scale_decommit[k], t2 - t1);
		}
		fprintf(stderr, "  scaling: %zu reservations, commit median %.2f us\n", have,
			(double)series_median(&scale_commit[k]) / 1e3);
	}
	free(res); /* the reservations go with the client's disconnect */
}

static void bench_reclaim(const config *cfg)
{
	mb_client *watcher = connect_broker(TIMEOUT_MS);
	mb_session_status st;
	uint64_t expect = (uint64_t)RECLAIM_RESERVATIONS * RECLAIM_SIZE;

	for (int t = 0; t < cfg->reclaim_trials; t++) {
		channel ch;
		report r;
		uint64_t baseline, polls = 0;

		check_hr(mb_get_session_status(watcher, &st), "session status");
		baseline = st.total_committed;
		channel_open(&ch);
		pid_t pid = spawn_worker(&ch, "victim", broker_url, RECLAIM_RESERVATIONS,
					 (long)RECLAIM_SIZE);
		channel_children_started(&ch);
		expect_report(&ch, REPORT_READY, &r, "victim");
		check_hr(mb_get_session_status(watcher, &st), "session status");
		if (st.total_committed < baseline + expect)
			die("the victim's commits are not charged (%" PRIu64 " < %" PRIu64 ")",
			    st.total_committed, baseline + expect);
		int pidfd = (int)syscall(SYS_pidfd_open, pid, 0);
		uint64_t t0 = now_ns(), t1, exited = 0;
		kill(pid, SIGKILL);
		for (;;) {
			struct pollfd pfd = {.fd = pidfd, .events = POLLIN};
			if (exited == 0 && pidfd >= 0 && poll(&pfd, 1, 0) == 1)
				exited = now_ns();
			check_hr(mb_get_session_status(watcher, &st), "session status");
			polls++;
			t1 = now_ns();
			if (st.total_committed <= baseline)
				break;
			if (t1 - t0 > 10ull * 1000000000u)
				die("the broker did not reclaim a dead client's memory in 10 s");
		}
		series_add(&reclaim, t1 - t0);
		if (exited == 0 && pidfd >= 0)
			exited = t1; /* exited during the last poll */
		if (pidfd >= 0) {
			series_add(&reclaim_exit, exited - t0);
			series_add(&reclaim_broker, t1 - exited);
			close(pidfd);
		}
		reclaim_polls_total += polls;
		reap_worker(pid, false);
		channel_close(&ch);
	}
	mb_disconnect(watcher);

	for (int t = 0; t < cfg->reclaim_trials; t++) {
		channel ch;
		report r;
		struct pollfd pfd = {.events = POLLIN};

		channel_open(&ch);
		pid_t pid = spawn_worker(&ch, "plain-victim", "-",
					 (long)(RECLAIM_RESERVATIONS * RECLAIM_SIZE), 0);
		channel_children_started(&ch);
		expect_report(&ch, REPORT_READY, &r, "plain victim");
		pfd.fd = (int)syscall(SYS_pidfd_open, pid, 0);
		if (pfd.fd < 0)
			die("pidfd_open: %s", strerror(errno));
		uint64_t t0 = now_ns();
		kill(pid, SIGKILL);
		if (poll(&pfd, 1, TIMEOUT_MS) != 1)
			die("a SIGKILLed process did not exit");
		series_add(&plain_exit, now_ns() - t0);
		close(pfd.fd);
		reap_worker(pid, false);
		channel_close(&ch);
	}
}

/* ---------------------------------------------------------------- report */

/* A target of the brief: met when value <= limit (at_most), < limit (below) or >= limit. */
typedef enum { AT_MOST, BELOW, AT_LEAST } bound;
typedef struct target {
	const char *key, *text;
	double value, limit;
	bound how;
	const char *unit;
	bool met;
} target;

#define NTARGETS 6
static target targets[NTARGETS];

static bool target_met(const target *t)
{
	switch (t->how) {
	case AT_MOST:
		return t->value <= t->limit;
	case BELOW:
		return t->value < t->limit;
	default:
		return t->value >= t->limit;
	}
}

static double us(uint64_t ns)
{
	return (double)ns / 1e3;
}

static void machine(int *ncpu, char *model, size_t model_len, struct utsname *u)
{
	char line[512];
	FILE *f = fopen("/proc/cpuinfo", "r");

	*ncpu = (int)sysconf(_SC_NPROCESSORS_ONLN);
	snprintf(model, model_len, "unknown");
	if (f != NULL) {
		while (fgets(line, sizeof(line), f) != NULL)
			if (strncmp(line, "model name", 10) == 0) {
				char *v = strchr(line, ':');
				if (v != NULL) {
					v += 1 + strspn(v + 1, " \t");
					v[strcspn(v, "\n")] = '\0';
					snprintf(model, model_len, "%s", v);
				}
				break;
			}
		fclose(f);
	}
	uname(u);
}

static void loadavg(char *buf, size_t len)
{
	FILE *f = fopen("/proc/loadavg", "r");
	snprintf(buf, len, "?");
	if (f != NULL) {
		if (fgets(buf, (int)len, f) != NULL)
			buf[strcspn(buf, "\n")] = '\0';
		fclose(f);
	}
}

static void json_string(FILE *f, const char *s)
{
	fputc('"', f);
	for (; *s; s++) {
		if (*s == '"' || *s == '\\')
			fprintf(f, "\\%c", *s);
		else if ((unsigned char)*s < 0x20)
			fprintf(f, "\\u%04x", *s);
		else
			fputc(*s, f);
	}
	fputc('"', f);
}

static double cpu_per_rt_us(const cpu_acc *c, bool client)
{
	if (c->round_trips <= 0)
		return 0;
	return (client ? c->client_ns : c->server_ns) / c->round_trips / 1e3;
}

static void print_series_row(series *s, uint64_t ref)
{
	printf("  %-42s %10.2f %10.2f", s->label, us(series_median(s)), us(series_p99(s)));
	if (ref > 0)
		printf(" %8.2fx", (double)series_median(s) / (double)ref);
	printf("\n");
}

static char load_start[128];

static void report_all(const config *cfg, double elapsed_s)
{
	char load_end[128];
	int ncpu;
	char model[256];
	struct utsname u;
	uint64_t echo = series_median(&lat[S_ECHO_AIO]);
	const tput *t16 = NULL;

	machine(&ncpu, model, sizeof(model), &u);
	loadavg(load_end, sizeof(load_end));
	for (int i = 0; i < NTPUT; i++)
		if (tputs[i].procs == 16)
			t16 = &tputs[i];

	targets[0] = (target){"commit_vs_echo",
			      "commit median <= 1.3x nng echo median",
			      (double)series_median(&lat[S_COMMIT]) / (double)echo,
			      1.3,
			      AT_MOST,
			      "x",
			      false};
	targets[1] = (target){"query_us",
			      "VirtualQuery median < 2 us",
			      us(series_median(&lat[S_QUERY])),
			      2.0,
			      BELOW,
			      "us",
			      false};
	targets[2] = (target){"protect_us",
			      "VirtualProtect median < 2 us",
			      us(series_median(&lat[S_PROTECT])),
			      2.0,
			      BELOW,
			      "us",
			      false};
	targets[3] = (target){"tput16_vs_echo",
			      "16-process throughput >= 0.8x nng echo",
			      t16 && t16->echo_ops > 0 ? t16->mb_ops / t16->echo_ops : 0,
			      0.8,
			      AT_LEAST,
			      "x",
			      false};
	targets[4] = (target){"scaling_max_vs_100",
			      "commit median, max vs 100 reservations <= 1.5x",
			      (double)series_median(&scale_commit[2]) /
				  (double)series_median(&scale_commit[0]),
			      1.5,
			      AT_MOST,
			      "x",
			      false};
	targets[5] = (target){"reclaim_ms",
			      "dead-client reclaim median < 50 ms",
			      (double)series_median(&reclaim) / 1e6,
			      50.0,
			      BELOW,
			      "ms",
			      false};

	printf("\nmembroker benchmark (%s mode), %.0f s\n", cfg->quick ? "quick" : "full",
	       elapsed_s);
	printf("machine: %d CPUs, %s, Linux %s\n", ncpu, model, u.release);
	printf("/proc/loadavg at start: %s; at end: %s\n", load_start, load_end);
	printf("echo payload: %zu bytes (a packed commit request, mb_wire_pack_request)\n\n",
	       payload_len);

	printf("Latency (%d samples each, %d interleaved rounds)\n", cfg->iters, ROUNDS);
	printf("  %-42s %10s %10s %9s\n", "operation", "median us", "p99 us", "vs echo");
	print_series_row(&lat[S_TIMER], 0);
	print_series_row(&lat[S_ECHO_AIO], echo);
	print_series_row(&lat[S_ECHO_SYNC], echo);
	print_series_row(&lat[S_MEMFD], 0);
	print_series_row(&lat[S_ANON], 0);
	print_series_row(&lat[S_MPROTECT], 0);
	print_series_row(&lat[S_RESERVE], echo);
	print_series_row(&lat[S_COMMIT], echo);
	print_series_row(&lat[S_DECOMMIT], echo);
	print_series_row(&lat[S_RELEASE], echo);
	print_series_row(&lat[S_LOAD], echo);
	print_series_row(&lat[S_QUERY], 0);
	print_series_row(&lat[S_PROTECT], 0);
	print_series_row(&lat[S_PROTECT_SAME], 0);
	print_series_row(&lat[S_CYCLE], 0);

	uint64_t memfd = series_median(&lat[S_MEMFD]);
	uint64_t credit_total = lat[S_CR_COMMIT].n + lat[S_CR_CYCLE].n + climb_commits;
	printf(
	    "\nCommit credit (a second broker with the default --commit-credit 4M; the rows above "
	    "use --commit-credit 0)\n");
	printf("  %-42s %10s %10s %9s %9s\n", "operation", "median us", "p99 us", "vs echo",
	       "vs memfd");
	const int cr[] = {S_CR_COMMIT, S_CR_DECOMMIT, S_CR_CYCLE, S_CR_CLIMB};
	for (size_t i = 0; i < sizeof(cr) / sizeof(cr[0]); i++) {
		series *s = &lat[cr[i]];
		printf("  %-42s %10.2f %10.2f %8.2fx %8.2fx\n", s->label, us(series_median(s)),
		       us(series_p99(s)), (double)series_median(s) / (double)echo,
		       (double)series_median(s) / (double)memfd);
	}
	printf("  amortized commit 64K (mean of the climbing series, Sync round trips included): "
	       "%.2f us = %.2fx the memfd baseline, %.3fx the echo\n",
	       us(series_mean(&lat[S_CR_CLIMB])),
	       (double)series_mean(&lat[S_CR_CLIMB]) / (double)memfd,
	       (double)series_mean(&lat[S_CR_CLIMB]) / (double)echo);
	/* The climbing commits that carried a Sync are the slowest ones: as many as there were
	 * Syncs. Their mean is what one report costs. */
	series *cl = &lat[S_CR_CLIMB];
	uint64_t top = 0, k = climb_syncs < cl->n ? climb_syncs : cl->n;
	series_median(cl); /* sorts */
	for (uint64_t i = 0; i < k; i++)
		top += cl->v[cl->n - 1 - i];
	printf("  the %" PRIu64
	       " slowest climbing commits (one per Sync): mean %.2f us; the others: mean "
	       "%.2f us\n",
	       k, k ? us(top / k) : 0.0,
	       cl->n > k ? us((series_mean(cl) * cl->n - top) / (cl->n - k)) : 0.0);
	printf("  round trips: %" PRIu64 " Syncs and %" PRIu64
	       " commits not served locally, for %" PRIu64
	       " commits (%.1f%% without a round trip); memfd baseline = \"%s\"\n",
	       climb_syncs, credit_total > climb_local ? credit_total - climb_local : 0,
	       credit_total, credit_total ? 100.0 * (double)climb_local / (double)credit_total : 0,
	       lat[S_MEMFD].label);

	printf(
	    "\nThroughput (round trips/s, all processes; membroker: commit+decommit; median of %d "
	    "alternating runs of %d ms each, [min-max])\n",
	    cfg->tput_reps, cfg->tput_ms);
	printf("  %6s %24s %24s %8s\n", "procs", "nng echo", "membroker", "ratio");
	for (int i = 0; i < NTPUT; i++)
		printf("  %6d %8.0f [%6.0f-%6.0f] %8.0f [%6.0f-%6.0f] %7.2fx%s\n", tputs[i].procs,
		       tputs[i].echo_ops, tputs[i].echo_min, tputs[i].echo_max, tputs[i].mb_ops,
		       tputs[i].mb_min, tputs[i].mb_max,
		       tputs[i].echo_ops > 0 ? tputs[i].mb_ops / tputs[i].echo_ops : 0,
		       tputs[i].mb_errors + tputs[i].echo_errors ? "  (errors!)" : "");
	printf("  CPU time per round trip (all runs), us: %6s %10s %10s %10s %10s\n", "procs",
	       "echo cli", "echo srv", "mb cli", "broker");
	for (int i = 0; i < NTPUT; i++)
		printf("  %40s %6d %10.2f %10.2f %10.2f %10.2f\n", "", tputs[i].procs,
		       cpu_per_rt_us(&tputs[i].echo_cpu, true),
		       cpu_per_rt_us(&tputs[i].echo_cpu, false),
		       cpu_per_rt_us(&tputs[i].mb_cpu, true),
		       cpu_per_rt_us(&tputs[i].mb_cpu, false));
	printf("  with commit credit (the same workers, one run each; operations/s, no round "
	       "trip):\n");
	for (int i = 0; i < NTPUT; i++)
		printf("  %6d %8.0f ops/s = %.1fx the echo's round trips/s; client CPU %.2f us per "
		       "op%s\n",
		       tputs[i].procs, tputs[i].credit_ops,
		       tputs[i].echo_ops > 0 ? tputs[i].credit_ops / tputs[i].echo_ops : 0,
		       cpu_per_rt_us(&tputs[i].credit_cpu, true),
		       tputs[i].credit_errors ? "  (errors!)" : "");

	printf("\nScaling: commit/decommit 64K on a random held reservation (%d samples each)\n",
	       cfg->scale_iters);
	printf("  %12s %12s %12s %12s %12s\n", "reservations", "commit med", "commit p99",
	       "decomm med", "decomm p99");
	for (int k = 0; k < NSCALE; k++)
		printf("  %12zu %10.2fus %10.2fus %10.2fus %10.2fus\n", scale_counts[k],
		       us(series_median(&scale_commit[k])), us(series_p99(&scale_commit[k])),
		       us(series_median(&scale_decommit[k])), us(series_p99(&scale_decommit[k])));
	printf("  reserve 64K with ~%zu held: median %.2f us, p99 %.2f us\n", scale_counts[2],
	       us(series_median(&scale_reserve_tail)), us(series_p99(&scale_reserve_tail)));
	printf(
	    "  broker RSS %ld -> %ld KiB: %.0f bytes per reservation; client RSS %ld -> %ld KiB: "
	    "%.0f bytes per reservation\n",
	    broker_rss_before, broker_rss_after,
	    (double)(broker_rss_after - broker_rss_before) * 1024.0 / (double)scale_counts[2],
	    client_rss_before, client_rss_after,
	    (double)(client_rss_after - client_rss_before) * 1024.0 / (double)scale_counts[2]);

	printf("\nDead-client reclaim (%d x 1 MiB committed and touched, SIGKILL -> "
	       "total_committed back): %d trials\n",
	       RECLAIM_RESERVATIONS, cfg->reclaim_trials);
	printf("  budget restored: median %.2f ms, p99 %.2f ms, max %.2f ms, min %.2f ms\n",
	       (double)series_median(&reclaim) / 1e6, (double)series_p99(&reclaim) / 1e6,
	       (double)series_pct(&reclaim, 100) / 1e6, (double)series_pct(&reclaim, 0) / 1e6);
	printf(
	    "  of which the victim's own exit (its pidfd readable): median %.2f ms, max %.2f ms\n",
	    (double)series_median(&reclaim_exit) / 1e6,
	    (double)series_pct(&reclaim_exit, 100) / 1e6);
	printf(
	    "  from the exit to the budget restored (broker's part): median %.2f ms, max %.2f ms\n",
	    (double)series_median(&reclaim_broker) / 1e6,
	    (double)series_pct(&reclaim_broker, 100) / 1e6);
	printf(
	    "  baseline, SIGKILL of a plain single-threaded process with 64 MiB of touched memfd "
	    "memory to its exit: median %.2f ms, max %.2f ms\n",
	    (double)series_median(&plain_exit) / 1e6, (double)series_pct(&plain_exit, 100) / 1e6);

	printf("\nTargets (from the brief)\n");
	for (int i = 0; i < NTARGETS; i++) {
		target *t = &targets[i];
		t->met = target_met(t);
		printf("  %-50s %8.2f %-2s  %s\n", t->text, t->value, t->unit,
		       t->met ? "met" : "NOT MET");
	}

	if (cfg->json == NULL)
		return;
	FILE *f = fopen(cfg->json, "w");
	if (f == NULL)
		die("cannot write %s: %s", cfg->json, strerror(errno));
	fprintf(f, "{\n  \"mode\": \"%s\",\n  \"elapsed_s\": %.1f,\n",
		cfg->quick ? "quick" : "full", elapsed_s);
	fprintf(f, "  \"machine\": {\"nproc\": %d, \"cpu\": ", ncpu);
	json_string(f, model);
	fprintf(f, ", \"kernel\": ");
	json_string(f, u.release);
	fprintf(f, ", \"loadavg_start\": ");
	json_string(f, load_start);
	fprintf(f, ", \"loadavg_end\": ");
	json_string(f, load_end);
	fprintf(f, "},\n  \"echo_payload_bytes\": %zu,\n  \"latency_ns\": {\n", payload_len);
	for (int i = 0; i < S_COUNT; i++)
		fprintf(f,
			"    \"%s\": {\"median\": %" PRIu64 ", \"p99\": %" PRIu64
			", \"n\": %zu}%s\n",
			lat[i].key, series_median(&lat[i]), series_p99(&lat[i]), lat[i].n,
			i + 1 < S_COUNT ? "," : "");
	fprintf(f,
		"  },\n  \"credit\": {\"amortized_commit_ns\": %" PRIu64
		", \"amortized_vs_memfd\": %.3f, \"commits\": %" PRIu64 ", \"local\": %" PRIu64
		", \"syncs\": %" PRIu64 "},\n",
		series_mean(&lat[S_CR_CLIMB]),
		(double)series_mean(&lat[S_CR_CLIMB]) / (double)series_median(&lat[S_MEMFD]),
		lat[S_CR_COMMIT].n + lat[S_CR_CYCLE].n + climb_commits, climb_local, climb_syncs);
	fprintf(f, "  \"ratios_vs_echo_median\": {\n");
	const int rs[] = {S_COMMIT, S_DECOMMIT, S_RESERVE, S_RELEASE, S_LOAD, S_ECHO_SYNC};
	for (size_t i = 0; i < sizeof(rs) / sizeof(rs[0]); i++)
		fprintf(f, "    \"%s\": %.3f%s\n", lat[rs[i]].key,
			(double)series_median(&lat[rs[i]]) / (double)echo,
			i + 1 < sizeof(rs) / sizeof(rs[0]) ? "," : "");
	fprintf(f, "  },\n  \"throughput\": [\n");
	for (int i = 0; i < NTPUT; i++)
		fprintf(
		    f,
		    "    {\"procs\": %d, \"echo_rt_per_s\": %.0f, \"mb_rt_per_s\": %.0f, "
		    "\"echo_min\": %.0f, \"echo_max\": %.0f, \"mb_min\": %.0f, \"mb_max\": %.0f, "
		    "\"ratio\": %.3f, \"errors\": %" PRIu64
		    ", \"cpu_us_per_rt\": {\"echo_client\": "
		    "%.2f, \"echo_server\": %.2f, \"mb_client\": %.2f, \"broker\": %.2f}}%s\n",
		    tputs[i].procs, tputs[i].echo_ops, tputs[i].mb_ops, tputs[i].echo_min,
		    tputs[i].echo_max, tputs[i].mb_min, tputs[i].mb_max,
		    tputs[i].echo_ops > 0 ? tputs[i].mb_ops / tputs[i].echo_ops : 0,
		    tputs[i].mb_errors + tputs[i].echo_errors,
		    cpu_per_rt_us(&tputs[i].echo_cpu, true),
		    cpu_per_rt_us(&tputs[i].echo_cpu, false), cpu_per_rt_us(&tputs[i].mb_cpu, true),
		    cpu_per_rt_us(&tputs[i].mb_cpu, false), i + 1 < NTPUT ? "," : "");
	fprintf(f, "  ],\n  \"scaling\": [\n");
	for (int k = 0; k < NSCALE; k++)
		fprintf(f,
			"    {\"reservations\": %zu, \"commit_median_ns\": %" PRIu64
			", \"commit_p99_ns\": %" PRIu64 ", \"decommit_median_ns\": %" PRIu64
			", \"decommit_p99_ns\": %" PRIu64 "}%s\n",
			scale_counts[k], series_median(&scale_commit[k]),
			series_p99(&scale_commit[k]), series_median(&scale_decommit[k]),
			series_p99(&scale_decommit[k]), k + 1 < NSCALE ? "," : "");
	fprintf(
	    f,
	    "  ],\n  \"reserve_at_max_median_ns\": %" PRIu64 ",\n"
	    "  \"memory_per_reservation\": {\"reservations\": %zu, \"broker_rss_kib_before\": %ld, "
	    "\"broker_rss_kib_after\": %ld, \"broker_bytes_per_reservation\": %.1f, "
	    "\"client_bytes_per_reservation\": %.1f},\n",
	    series_median(&scale_reserve_tail), scale_counts[2], broker_rss_before,
	    broker_rss_after,
	    (double)(broker_rss_after - broker_rss_before) * 1024.0 / (double)scale_counts[2],
	    (double)(client_rss_after - client_rss_before) * 1024.0 / (double)scale_counts[2]);
	fprintf(f,
		"  \"reclaim\": {\"trials\": %zu, \"reservations\": %d, \"bytes\": %" PRIu64
		", \"median_ns\": %" PRIu64 ", \"p99_ns\": %" PRIu64 ", \"max_ns\": %" PRIu64
		", \"exit_median_ns\": %" PRIu64 ", \"broker_part_median_ns\": %" PRIu64
		", \"plain_process_exit_median_ns\": %" PRIu64 ", \"mean_polls\": %.1f},\n",
		reclaim.n, RECLAIM_RESERVATIONS, (uint64_t)RECLAIM_RESERVATIONS * RECLAIM_SIZE,
		series_median(&reclaim), series_p99(&reclaim), series_pct(&reclaim, 100),
		series_median(&reclaim_exit), series_median(&reclaim_broker),
		series_median(&plain_exit),
		reclaim.n ? (double)reclaim_polls_total / (double)reclaim.n : 0);
	fprintf(f, "  \"targets\": [\n");
	for (int i = 0; i < NTARGETS; i++) {
		fprintf(f, "    {\"key\": \"%s\", \"text\": ", targets[i].key);
		json_string(f, targets[i].text);
		fprintf(f, ", \"value\": %.3f, \"limit\": %.3f, \"unit\": \"%s\", \"met\": %s}%s\n",
			targets[i].value, targets[i].limit, targets[i].unit,
			targets[i].met ? "true" : "false", i + 1 < NTARGETS ? "," : "");
	}
	fprintf(f, "  ]\n}\n");
	if (fclose(f) != 0)
		die("cannot write %s", cfg->json);
	printf("\nJSON: %s\n", cfg->json);
}

/* ---------------------------------------------------------------- main */

static void usage(void)
{
	fprintf(stderr, "usage: mb_bench [--quick] [--json FILE]\n");
	exit(2);
}

int main(int argc, char **argv)
{
	config cfg = {0};
	mb_client *c;
	uint64_t start = now_ns();

	if (argc >= 2 && strcmp(argv[1], "--worker") == 0)
		return worker_main(argc, argv);
	for (int i = 1; i < argc; i++) {
		if (strcmp(argv[i], "--quick") == 0)
			cfg.quick = true;
		else if (strcmp(argv[i], "--json") == 0 && i + 1 < argc)
			cfg.json = argv[++i];
		else
			usage();
	}
	cfg.iters = cfg.quick ? 2000 : 20000;
	cfg.tput_ms = cfg.quick ? 500 : 1500;
	cfg.tput_reps = cfg.quick ? 1 : 5;
	cfg.scale_iters = cfg.quick ? 1000 : 5000;
	cfg.scale_max = cfg.quick ? 10000 : 100000;
	cfg.reclaim_trials = cfg.quick ? 5 : 20;
	loadavg(load_start, sizeof(load_start));

	ssize_t n = readlink("/proc/self/exe", self_exe, sizeof(self_exe) - 1);
	if (n <= 0)
		die("readlink /proc/self/exe: %s", strerror(errno));
	self_exe[n] = '\0';
	signal(SIGINT, on_signal);
	signal(SIGTERM, on_signal);
	signal(SIGPIPE, SIG_IGN);
	unsetenv("NOTIFY_SOCKET");

	snprintf(tmp_dir, sizeof(tmp_dir), "/tmp/mbbench.XXXXXX");
	if (mkdtemp(tmp_dir) == NULL) {
		tmp_dir[0] = '\0';
		die("mkdtemp: %s", strerror(errno));
	}
	snprintf(broker_url, sizeof(broker_url), "ipc://%s/mb.sock", tmp_dir);
	snprintf(echo_url, sizeof(echo_url), "ipc://%s/echo.sock", tmp_dir);
	snprintf(broker_log, sizeof(broker_log), "%s/broker.log", tmp_dir);
	snprintf(credit_url, sizeof(credit_url), "ipc://%s/credit.sock", tmp_dir);
	snprintf(credit_log, sizeof(credit_log), "%s/credit.log", tmp_dir);

	/* Children first, while this process has not started nng (posix_spawn is safe anyway). */
	/* The main broker grants no commit credit, so every commit below is the round trip the
	 * targets are about; the second one shows what credit changes. */
	start_broker(&broker_pid, broker_url, broker_log, "0");
	start_broker(&credit_pid, credit_url, credit_log, "4M");
	channel ech;
	report r;
	channel_open(&ech);
	echo_pid = spawn_worker(&ech, "echo-server", echo_url, 0, 0);
	nlive--; /* tracked as echo_pid, stopped with SIGTERM */
	channel_children_started(&ech);
	expect_report(&ech, REPORT_READY, &r, "echo server");
	channel_close(&ech);
	c = connect_broker(20000);
	mb_client *cc = connect_to(&credit_pid, credit_url, credit_log, 20000);
	make_payload();

	fprintf(stderr, "mb_bench: broker pid %d at %s, echo server pid %d; %s mode\n",
		(int)broker_pid, broker_url, (int)echo_pid, cfg.quick ? "quick" : "full");
	fprintf(stderr, "  latency...\n");
	bench_latency(&cfg, c, cc);
	mb_disconnect(cc);
	fprintf(stderr, "  throughput...\n");
	bench_throughput(&cfg);
	stop_pid(&credit_pid, SIGTERM);
	fprintf(stderr, "  scaling...\n");
	bench_scaling(&cfg, c);
	mb_disconnect(c);
	fprintf(stderr, "  reclaim...\n");
	bench_reclaim(&cfg);

	report_all(&cfg, (double)(now_ns() - start) / 1e9);
	cleanup();
	return 0;
}
