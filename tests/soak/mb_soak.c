/*
 * mb_soak.c: the broker under everything at once, for minutes: honest workers (test_stress's
 * worker, each checking its own data and its books), workers killed with SIGKILL, hostile processes
 * taking turns at the sockets and at their own section, and broker restarts. Meanwhile the broker's
 * invariant is sampled: total committed never above the budget, the broker's own count of breaches
 * of its books' invariant (total == sum of sessions, checked at every audit) zero, and
 * the total equal to the sum of what the clients hold (membrokerctl's view; checked in a lull
 * every 40 s, when the workers of a wave have finished and none has started). An honest client in a
 * fresh process measures how long connect + commit takes during each attack, against
 * mb_hostile_honest_bound measured before the workers start.
 *
 * Usage: mb_soak [SECONDS]   (default MB_SOAK_SECONDS, else 600; `make soak` runs it)
 *        MB_SOAK_SEED=<n>    seeds the choices (printed at the start)
 *        MB_SOAK_RESTART_SECONDS=<n>  a broker restart every n seconds (default 150)
 * Exit 0 when no violation was seen; otherwise the count of violations (at most 100).
 *
 * Restarts: the broker is stopped (SIGTERM) and started again on the same address while the
 * workers run. A worker survives a restart only if the client library re-establishes its session
 * with its memory intact; a worker that fails during a restart is counted as a violation like any
 * other, so the soak measures what a restart costs the clients.
 */
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <dirent.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <json-c/json.h>

#include "harness.h"
#include "hostile.h"
#include "membroker.h"
#include "membroker.pb-c.h"

#define MiB	       ((uint64_t)1 << 20)
#define BUDGET	       (64 * MiB)
#define WORKERS	       12
#define MAX_KIDS       64
#define SAMPLE_MS      50
#define ATTACK_MS      4000
#define RESTART_EVERY  (150 * 1000)
#define LULL_EVERY     (40 * 1000)
#define HONEST_BYTES   (4 * MiB)
#define MAX_VIOLATIONS 100

static const char *const broker_args[] = {"--budget", "64M", "--audit-interval", "200", NULL};

static int violations;

static void violation(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	fprintf(stderr, "soak: VIOLATION: ");
	vfprintf(stderr, fmt, ap);
	fprintf(stderr, "\n");
	va_end(ap);
	violations++;
}

static uint64_t rng;

static uint64_t rnd(uint64_t n)
{
	rng ^= rng << 13;
	rng ^= rng >> 7;
	rng ^= rng << 17;
	return n ? rng % n : 0;
}

/* ------------------------------------------------------------------------------------------ */
/* Honest workers: test_stress --worker ADDRESS SEED MS                                        */
/* ------------------------------------------------------------------------------------------ */

typedef struct kid {
	pid_t pid;
	bool killed;
} kid;

static kid kids[MAX_KIDS];
static int started, killed, finished_ok;

static int live_kids(void)
{
	int n = 0;
	for (int i = 0; i < MAX_KIDS; i++)
		n += kids[i].pid > 0;
	return n;
}

static void spawn_worker(const char *address)
{
	char seed[32], ms[32];
	int slot = -1;

	for (int i = 0; i < MAX_KIDS && slot < 0; i++)
		if (kids[i].pid == 0)
			slot = i;
	if (slot < 0)
		return;
	snprintf(seed, sizeof(seed), "%" PRIu64, rnd(UINT64_MAX - 1) + 1);
	snprintf(ms, sizeof(ms), "%" PRIu64, 2000 + rnd(13000));
	pid_t pid = fork();
	if (pid == 0) {
		execl(MB_STRESS_PATH, MB_STRESS_PATH, "--worker", address, seed, ms, (char *)NULL);
		_exit(127);
	}
	if (pid > 0) {
		kids[slot].pid = pid;
		kids[slot].killed = false;
		started++;
	}
}

/* Reaps finished workers; a worker that was not killed must exit 0. */
static void reap_workers(bool block)
{
	for (int i = 0; i < MAX_KIDS; i++) {
		int st;
		if (kids[i].pid <= 0)
			continue;
		pid_t p = waitpid(kids[i].pid, &st, block ? 0 : WNOHANG);
		if (p != kids[i].pid)
			continue;
		if (!kids[i].killed) {
			if (WIFEXITED(st) && WEXITSTATUS(st) == 0)
				finished_ok++;
			else
				violation("worker %d ended with %s %d", (int)p,
					  WIFEXITED(st) ? "exit code" : "signal",
					  WIFEXITED(st) ? WEXITSTATUS(st) : WTERMSIG(st));
		}
		kids[i].pid = 0;
	}
}

static void kill_one_worker(void)
{
	int live[MAX_KIDS], n = 0;

	for (int i = 0; i < MAX_KIDS; i++)
		if (kids[i].pid > 0 && !kids[i].killed)
			live[n++] = i;
	if (n == 0)
		return;
	kid *k = &kids[live[rnd((uint64_t)n)]];
	k->killed = true;
	kill(k->pid, SIGKILL);
	killed++;
}

/* ------------------------------------------------------------------------------------------ */
/* Attacks: forked children using raw system calls only (nng cannot run in a forked child)    */
/* ------------------------------------------------------------------------------------------ */

typedef struct target {
	char rpc[256], fd[264];
} target;

static void attack_hangups(void *arg)
{
	const target *t = arg;
	for (;;) {
		int s = mb_hostile_connect(t->rpc, SOCK_STREAM);
		if (s >= 0)
			close(s);
		usleep(1000);
	}
}

static void attack_half_headers(void *arg)
{
	const target *t = arg;
	for (;;) {
		int s = mb_hostile_connect(t->rpc, SOCK_STREAM);
		if (s >= 0) {
			(void)!write(s, mb_hostile_sp_req_header, 4);
			usleep(50 * 1000);
			close(s);
		}
	}
}

static void attack_garbage(void *arg)
{
	const target *t = arg;
	unsigned char junk[512];
	uint64_t x = (uint64_t)getpid() * 0x9E3779B97F4A7C15ull;

	for (;;) {
		int s = mb_hostile_sp_open(t->rpc);
		if (s < 0) {
			usleep(10 * 1000);
			continue;
		}
		for (size_t i = 0; i < sizeof(junk); i++) {
			x ^= x << 13, x ^= x >> 7, x ^= x << 17;
			junk[i] = (unsigned char)x;
		}
		/* A frame length the broker must refuse, then noise. */
		(void)!write(s, junk, sizeof(junk));
		usleep(5 * 1000);
		close(s);
	}
}

static void attack_unread(void *arg)
{
	const target *t = arg;
	mb_hostile_unread_flood(t->rpc, false);
}

static void attack_fd_silent(void *arg)
{
	const target *t = arg;
	int s[64];

	for (;;) {
		for (int i = 0; i < 64; i++)
			s[i] = mb_hostile_connect(t->fd, SOCK_SEQPACKET);
		usleep(300 * 1000);
		for (int i = 0; i < 64; i++)
			if (s[i] >= 0)
				close(s[i]);
	}
}

/* The rogue: a real client (a fresh process of this program) writing into its own section where
 * it committed nothing, until the broker disconnects it; then again. */
static int rogue_role(const char *address)
{
	for (int round = 0; round < 20; round++) {
		mb_client *c;
		uint8_t *base = NULL;
		int fd = -1;

		if (mb_connect_named(address, "soak-rogue", &c) != S_OK)
			return 0; /* refused while throttled: that is the broker's right */
		if (mb_virtual_alloc(c, NULL, 4 * MiB, MEM_RESERVE, PAGE_NOACCESS, eTaskCritical,
				     (void **)&base) != S_OK) {
			mb_disconnect(c);
			continue;
		}
		/* The section: the newest memfd in our descriptor table. */
		fd = mb_hostile_newest_memfd(getpid());
		if (fd >= 0) {
			uint8_t *p = mmap(NULL, 2 * MiB, PROT_READ | PROT_WRITE, MAP_SHARED, fd,
					  (off_t)(uintptr_t)base);
			if (p != MAP_FAILED) {
				for (int i = 0; i < 50; i++) {
					memset(p, 0x5A, 2 * MiB);
					usleep(20 * 1000);
				}
				munmap(p, 2 * MiB);
			}
		}
		mb_disconnect(c);
	}
	return 0;
}

typedef struct attack {
	const char *name;
	void (*fn)(void *arg);
	int copies;
	bool drain; /* stop with SIGUSR1 and wait, rather than SIGKILL */
} attack;

static const attack attacks[] = {
    {"hang-ups", attack_hangups, 2, false},
    {"half headers", attack_half_headers, 4, false},
    {"garbage frames", attack_garbage, 2, false},
    {"unread replies", attack_unread, 4, true},
    {"silent .fd peers", attack_fd_silent, 2, false},
    {"rogue writer", NULL, 2, false},
};
#define NATTACKS (sizeof(attacks) / sizeof(attacks[0]))

/* ------------------------------------------------------------------------------------------ */
/* The honest probe, on its own thread so the sampling never stops                              */
/* ------------------------------------------------------------------------------------------ */

typedef struct probe {
	pthread_mutex_t mu;
	char address[256];
	bool stop;
	long worst_ms, runs, failures;
	long limit_ms; /* an honest connect + commit during an attack: mb_hostile_honest_bound */
	bool busy;     /* a probe is running (its commit counts in the books) */
	const char *during; /* the attack running, or NULL */
} probe;

static void *probe_main(void *arg)
{
	probe *p = arg;
	for (;;) {
		char address[256];
		const char *during;
		long ms = 0;

		pthread_mutex_lock(&p->mu);
		if (p->stop) {
			pthread_mutex_unlock(&p->mu);
			return NULL;
		}
		during = p->during;
		snprintf(address, sizeof(address), "%s", p->address);
		pthread_mutex_unlock(&p->mu);
		if (during != NULL) {
			pthread_mutex_lock(&p->mu);
			p->busy = true;
			pthread_mutex_unlock(&p->mu);
			int rv = mb_hostile_honest(address, HONEST_BYTES, &ms);
			pthread_mutex_lock(&p->mu);
			p->busy = false;
			p->runs++;
			/* A refusal while workers fill the budget is fair; what counts is time. */
			if (rv != 0)
				p->failures++;
			else if (ms > p->worst_ms)
				p->worst_ms = ms;
			if (rv == 0 && ms > p->limit_ms)
				violation("an honest connect + commit took %ld ms during %s", ms,
					  during);
			pthread_mutex_unlock(&p->mu);
		}
		usleep(200 * 1000);
	}
}

/* ------------------------------------------------------------------------------------------ */
/* The invariant                                                                                */
/* ------------------------------------------------------------------------------------------ */

/* Sum of the clients' committed bytes as membrokerctl reports them, or -1. */
static int64_t clients_sum(const char *address, int *count)
{
	char cmd[600];
	static char out[1 << 20];
	size_t n = 0;
	FILE *f;

	snprintf(cmd, sizeof(cmd), "exec %s -a '%s' -j clients 2>/dev/null", MEMBROKERCTL_PATH,
		 address);
	if ((f = popen(cmd, "r")) == NULL)
		return -1;
	while (n < sizeof(out) - 1) {
		size_t k = fread(out + n, 1, sizeof(out) - 1 - n, f);
		if (k == 0)
			break;
		n += k;
	}
	out[n] = 0;
	if (pclose(f) != 0)
		return -1;
	json_object *o = json_tokener_parse(out), *arr;
	if (o == NULL || !json_object_object_get_ex(o, "clients", &arr)) {
		json_object_put(o);
		return -1;
	}
	int64_t sum = 0;
	*count = (int)json_object_array_length(arr);
	for (int i = 0; i < *count; i++) {
		json_object *c = json_object_array_get_idx(arr, (size_t)i), *v;
		if (json_object_object_get_ex(c, "committed", &v))
			sum += (int64_t)json_object_get_uint64(v);
	}
	json_object_put(o);
	return sum;
}

/* The broker's count of books invariant breaches (its metrics), or -1. */
static long long invariant_violations(const char *address)
{
	char cmd[600], line[256];
	long long v = -1;
	FILE *f;

	snprintf(cmd, sizeof(cmd), "exec %s -a '%s' metrics 2>/dev/null", MEMBROKERCTL_PATH,
		 address);
	if ((f = popen(cmd, "r")) == NULL)
		return -1;
	while (fgets(line, sizeof(line), f) != NULL)
		if (sscanf(line, "membroker_invariant_violations_total %lld", &v) == 1)
			break;
	while (fgets(line, sizeof(line), f) != NULL)
		;
	pclose(f);
	return v;
}

static long long now_ms(void)
{
	return mb_hostile_now_ms();
}

int main(int argc, char **argv)
{
	mb_hostile_roles(argc, argv);
	if (argc == 3 && strcmp(argv[1], "rogue") == 0)
		return rogue_role(argv[2]);

	long seconds = 600;
	if (getenv("MB_SOAK_SECONDS"))
		seconds = atol(getenv("MB_SOAK_SECONDS"));
	if (argc > 1)
		seconds = atol(argv[1]);
	if (seconds <= 0) {
		fprintf(stderr, "usage: mb_soak [SECONDS]\n");
		return 2;
	}
	rng = getenv("MB_SOAK_SEED") ? strtoull(getenv("MB_SOAK_SEED"), NULL, 0)
				     : (uint64_t)time(NULL) * 2654435761u;
	if (rng == 0)
		rng = 1;
	fprintf(stderr, "soak: %ld s, seed %" PRIu64 ", budget 64 MiB, %d workers\n", seconds, rng,
		WORKERS);
	signal(SIGPIPE, SIG_IGN);
	setenv("MB_STRESS_OUTAGES", "1", 1); /* the workers ride out the restarts */
	long long restart_every = RESTART_EVERY;
	if (getenv("MB_SOAK_RESTART_SECONDS"))
		restart_every = atoll(getenv("MB_SOAK_RESTART_SECONDS")) * 1000;

	mb_test_broker b;
	if (mb_test_broker_start(&b, broker_args) != 0)
		return 1;
	target t;
	snprintf(t.rpc, sizeof(t.rpc), "%s", mb_hostile_path(&b));
	mb_hostile_path_with(&b, ".fd", t.fd, sizeof(t.fd));
	int fds0, sockets0;
	mb_hostile_baseline(b.pid, &fds0, &sockets0);

	/* Before any worker runs: what an honest connect + commit costs on this machine now. */
	probe p = {.mu = PTHREAD_MUTEX_INITIALIZER,
		   .limit_ms = mb_hostile_honest_bound(b.address, HONEST_BYTES)};
	snprintf(p.address, sizeof(p.address), "%s", b.address);
	pthread_t probe_thread;
	pthread_create(&probe_thread, NULL, probe_main, &p);

	mb_client *observer = NULL;
	long long t0 = now_ms(), end = t0 + seconds * 1000;
	long long next_attack = t0 + 2000, attack_end = 0, next_restart = t0 + restart_every;
	long long next_kill = t0 + 1000, next_lull = t0 + LULL_EVERY;
	bool lull = false;
	pid_t attackers[8];
	int nattackers = 0, restarts = 0, attacks_run = 0, sums_checked = 0;
	const attack *current = NULL;
	unsigned long samples = 0, sample_failures = 0;
	uint64_t peak = 0;

	while (now_ms() < end && violations < MAX_VIOLATIONS) {
		long long now = now_ms();

		reap_workers(false);
		/* Every LULL_EVERY no new workers start until the running ones are done, so the
		 * books stand still long enough to compare the sum of the clients with the total.
		 */
		if (!lull && now >= next_lull)
			lull = true;
		if (!lull && now < end - 3000)
			while (live_kids() < WORKERS)
				spawn_worker(b.address);
		if (now >= next_kill) {
			kill_one_worker();
			next_kill = now + 500 + (long long)rnd(2500);
		}

		/* Attacks take turns, ATTACK_MS each with a pause between. */
		if (current == NULL && now >= next_attack && now < end - ATTACK_MS - 2000) {
			current = &attacks[rnd(NATTACKS)];
			nattackers = 0;
			for (int i = 0; i < current->copies; i++) {
				pid_t a;
				if (current->fn != NULL)
					a = mb_hostile_fork(current->fn, &t);
				else if ((a = fork()) == 0) {
					execl("/proc/self/exe", argv[0], "rogue", b.address,
					      (char *)NULL);
					_exit(127);
				}
				if (a > 0)
					attackers[nattackers++] = a;
			}
			attacks_run++;
			attack_end = now + ATTACK_MS;
			pthread_mutex_lock(&p.mu);
			p.during = current->name;
			pthread_mutex_unlock(&p.mu);
		}
		if (current != NULL && now >= attack_end) {
			for (int i = 0; i < nattackers; i++) {
				if (current->drain) {
					kill(attackers[i], SIGUSR1);
					waitpid(attackers[i], NULL, 0);
				} else {
					mb_hostile_kill(attackers[i]);
				}
			}
			current = NULL;
			pthread_mutex_lock(&p.mu);
			p.during = NULL;
			pthread_mutex_unlock(&p.mu);
			next_attack = now + 1000 + (long long)rnd(3000);
		}

		/* A restart while the workers run (never during an attack: an attack's children
		 * hold the old broker's path). */
		if (current == NULL && now >= next_restart && now < end - 20000) {
			fprintf(stderr, "soak: restarting the broker (%d workers running)\n",
				live_kids());
			if (observer != NULL)
				mb_disconnect(observer);
			observer = NULL;
			char address[256];
			snprintf(address, sizeof(address), "%s", b.address);
			int st = mb_test_broker_stop(&b);
			if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
				violation("the broker did not stop cleanly (status 0x%x)", st);
			if (mb_test_broker_start_at(&b, address, broker_args) != 0) {
				violation("the broker did not start again");
				break;
			}
			restarts++;
			next_restart = now_ms() + restart_every;
		}

		if (observer == NULL &&
		    mb_connect_named(b.address, "soak-observer", &observer) != S_OK)
			observer = NULL;
		if (observer != NULL) {
			mb_session_status st;
			HRESULT hr = mb_get_session_status(observer, &st);
			if (hr == S_OK) {
				samples++;
				if (st.total_committed > peak)
					peak = st.total_committed;
				if (st.total_committed > st.budget)
					violation("total committed %" PRIu64
						  " over the budget %" PRIu64,
						  st.total_committed, st.budget);
			} else {
				sample_failures++;
			}
		}

		/* The sum of the clients against the total, when the books are still: no
		 * workers (they commit and free all the time), so between waves only. */
		pthread_mutex_lock(&p.mu);
		bool probing = p.busy;
		pthread_mutex_unlock(&p.mu);
		if (lull && live_kids() == 0 && current == NULL && !probing && observer != NULL) {
			int n = 0;
			mb_session_status st;
			int64_t sum = clients_sum(b.address, &n);
			if (sum >= 0 && mb_get_session_status(observer, &st) == S_OK) {
				sums_checked++;
				if ((uint64_t)sum != st.total_committed)
					violation("clients hold %" PRId64
						  " bytes, the total says %" PRIu64,
						  sum, st.total_committed);
			}
			long long broken = invariant_violations(b.address);
			if (broken != 0)
				violation("the broker counts %lld breaches of its books' invariant "
					  "(-1: unreadable)",
					  broken);
			lull = false;
			next_lull = now + LULL_EVERY;
		}
		if (kill(b.pid, 0) != 0) {
			violation("the broker died");
			break;
		}
		usleep(SAMPLE_MS * 1000);
	}

	/* Wind down: no more workers, wait for those running, then the broker must be at rest. */
	if (current != NULL)
		for (int i = 0; i < nattackers; i++)
			mb_hostile_kill(attackers[i]);
	long long wind = now_ms() + 60000;
	while (live_kids() > 0 && now_ms() < wind) {
		reap_workers(false);
		usleep(50 * 1000);
	}
	for (int i = 0; i < MAX_KIDS; i++)
		if (kids[i].pid > 0) {
			violation("worker %d still running a minute after the end",
				  (int)kids[i].pid);
			kids[i].killed = true;
			kill(kids[i].pid, SIGKILL);
		}
	reap_workers(true);
	pthread_mutex_lock(&p.mu);
	p.stop = true;
	pthread_mutex_unlock(&p.mu);
	pthread_join(probe_thread, NULL);

	if (observer != NULL) {
		/* Sessions end asynchronously after their processes exit: wait for the books. */
		mb_session_status st = {0};
		long long until = now_ms() + 30000;
		while (now_ms() < until && (mb_get_session_status(observer, &st) != S_OK ||
					    st.total_committed != 0 || st.sessions > 1))
			usleep(50 * 1000);
		if (st.total_committed != 0 || st.sessions > 1)
			violation("at rest: %" PRIu64 " bytes committed, %u sessions",
				  st.total_committed, st.sessions);
		mb_disconnect(observer);
	}
	long long broken = invariant_violations(b.address);
	if (broken != 0)
		violation(
		    "the broker counts %lld breaches of its books' invariant (-1: unreadable)",
		    broken);
	int fds = mb_hostile_wait_fds(b.pid, fds0, 30000);
	if (fds > fds0) {
		violation("the broker holds %d descriptors, %d at the start", fds, fds0);
		mb_hostile_dump_fds(b.pid);
	}
	int st = mb_test_broker_stop(&b);
	if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
		violation("the broker's exit status 0x%x", st);

	fprintf(stderr,
		"soak: %ld s: %d workers started (%d finished clean, %d killed), %d attacks, %d "
		"restarts; %lu invariant samples (%lu failed, peak %" PRIu64
		" KiB of 65536), %d sum checks; honest probe %ld runs, %ld refused, worst %ld ms "
		"(allowed %ld); %d violations\n",
		seconds, started, finished_ok, killed, attacks_run, restarts, samples,
		sample_failures, peak >> 10, sums_checked, p.runs, p.failures, p.worst_ms,
		p.limit_ms, violations);
	return violations > MAX_VIOLATIONS ? MAX_VIOLATIONS : violations;
}
