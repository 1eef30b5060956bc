/*
 * hostile.c: helpers of the attack tests (hostile.h).
 */
#include "hostile.h"

#include <dirent.h>
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "membroker.h"
#include "membroker.pb-c.h"

const unsigned char mb_hostile_sp_req_header[8] = {0, 'S', 'P', 0, 0, 0x30, 0, 0};

long long mb_hostile_now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

const char *mb_hostile_path(const mb_test_broker *b)
{
	return strncmp(b->address, "ipc://", 6) == 0 ? b->address + 6 : b->address;
}

void mb_hostile_path_with(const mb_test_broker *b, const char *suffix, char *out, size_t len)
{
	snprintf(out, len, "%s%s", mb_hostile_path(b), suffix);
}

int mb_hostile_connect(const char *path, int type)
{
	struct sockaddr_un sun = {.sun_family = AF_UNIX};
	int s = socket(AF_UNIX, type | SOCK_CLOEXEC, 0);

	if (s < 0)
		return -1;
	snprintf(sun.sun_path, sizeof(sun.sun_path), "%s", path);
	if (connect(s, (struct sockaddr *)&sun, sizeof(sun)) != 0) {
		close(s);
		return -1;
	}
	return s;
}

/* Reads exactly len bytes; 0 or -1. */
static int read_full(int s, void *buf, size_t len)
{
	for (size_t got = 0; got < len;) {
		ssize_t n = read(s, (char *)buf + got, len - got);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return -1;
		got += (size_t)n;
	}
	return 0;
}

static int write_full(int s, const void *buf, size_t len)
{
	for (size_t put = 0; put < len;) {
		ssize_t n = write(s, (const char *)buf + put, len - put);
		/* A send timeout in the middle of a frame must not cut it: finish it. */
		if (n < 0 &&
		    (errno == EINTR || ((errno == EAGAIN || errno == EWOULDBLOCK) && put > 0)))
			continue;
		if (n <= 0)
			return -1;
		put += (size_t)n;
	}
	return 0;
}

int mb_hostile_sp_open(const char *path)
{
	unsigned char head[8];
	int s = mb_hostile_connect(path, SOCK_STREAM);

	if (s < 0)
		return -1;
	if (write_full(s, mb_hostile_sp_req_header, sizeof(head)) != 0 ||
	    read_full(s, head, sizeof(head)) != 0) {
		close(s);
		return -1;
	}
	return s;
}

int mb_hostile_sp_send(int s, const struct Membroker__V1__Request *req, uint32_t id)
{
	unsigned char frame[9 + 4 + 4096];
	size_t body = membroker__v1__request__get_packed_size(req);
	uint64_t len = 4 + body;

	if (body > 4096)
		return -1;
	frame[0] = 1; /* a message; then its length, big endian, then REQ's request id */
	for (int i = 0; i < 8; i++)
		frame[1 + i] = (unsigned char)(len >> (56 - 8 * i));
	id |= 0x80000000u;
	for (int i = 0; i < 4; i++)
		frame[9 + i] = (unsigned char)(id >> (24 - 8 * i));
	membroker__v1__request__pack(req, frame + 13);
	return write_full(s, frame, 13 + body);
}

long mb_hostile_sp_recv(int s, void *buf, size_t cap)
{
	unsigned char head[9], id[4];
	uint64_t len = 0;

	if (read_full(s, head, sizeof(head)) != 0 || head[0] != 1)
		return -1;
	for (int i = 0; i < 8; i++)
		len = len << 8 | head[1 + i];
	if (len < 4 || len - 4 > cap || read_full(s, id, 4) != 0 ||
	    read_full(s, buf, (size_t)(len - 4)) != 0)
		return -1;
	return (long)(len - 4);
}

static int count_fds(pid_t pid, bool sockets_only)
{
	char dir[64], link[340], target[128];
	struct dirent *e;
	DIR *d;
	int n = 0;

	snprintf(dir, sizeof(dir), "/proc/%d/fd", (int)pid);
	if ((d = opendir(dir)) == NULL)
		return -1;
	while ((e = readdir(d)) != NULL) {
		if (e->d_name[0] == '.')
			continue;
		if (sockets_only) {
			snprintf(link, sizeof(link), "%s/%s", dir, e->d_name);
			ssize_t len = readlink(link, target, sizeof(target) - 1);
			if (len <= 0)
				continue;
			target[len] = '\0';
			if (strncmp(target, "socket:", 7) != 0)
				continue;
		}
		n++;
	}
	closedir(d);
	return n;
}

int mb_hostile_fds(pid_t pid)
{
	return count_fds(pid, false);
}

int mb_hostile_sockets(pid_t pid)
{
	return count_fds(pid, true);
}

void mb_hostile_baseline(pid_t pid, int *fds, int *sockets)
{
	*fds = *sockets = 0;
	for (int i = 0; i < 60; i++) {
		int f = mb_hostile_fds(pid), s = mb_hostile_sockets(pid);
		if (f > *fds)
			*fds = f;
		if (s > *sockets)
			*sockets = s;
		usleep(20000);
	}
}

void mb_hostile_dump_fds(pid_t pid)
{
	char dir[64], link[340], target[256];
	struct dirent *e;
	DIR *d;

	snprintf(dir, sizeof(dir), "/proc/%d/fd", (int)pid);
	if ((d = opendir(dir)) == NULL)
		return;
	while ((e = readdir(d)) != NULL) {
		if (e->d_name[0] == '.')
			continue;
		snprintf(link, sizeof(link), "%s/%s", dir, e->d_name);
		ssize_t len = readlink(link, target, sizeof(target) - 1);
		if (len > 0) {
			target[len] = '\0';
			fprintf(stderr, "  fd %s -> %s\n", e->d_name, target);
		}
	}
	closedir(d);
}

int mb_hostile_wait_fds(pid_t pid, int fds, int timeout_ms)
{
	long long deadline = mb_hostile_now_ms() + timeout_ms;
	int n;

	while ((n = mb_hostile_fds(pid)) > fds && mb_hostile_now_ms() < deadline)
		usleep(20000);
	if (n > fds) {
		fprintf(stderr, "process %d holds %d descriptors, more than %d:\n", (int)pid, n,
			fds);
		mb_hostile_dump_fds(pid);
	}
	return n;
}

pid_t mb_hostile_fork(void (*fn)(void *arg), void *arg)
{
	pid_t pid = fork();

	if (pid == 0) {
		/* A failing test longjmps past its cleanup: its attackers must not outlive it. */
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		signal(SIGPIPE, SIG_IGN);
		fn(arg);
		_exit(0);
	}
	return pid;
}

void mb_hostile_kill(pid_t pid)
{
	if (pid <= 0)
		return;
	kill(pid, SIGKILL);
	while (waitpid(pid, NULL, 0) < 0 && errno == EINTR)
		;
}

/* The role "honest": see mb_hostile_honest. Prints "ok <ms>" or "fail <reason>". */
static int honest_role(const char *address, uint64_t bytes)
{
	long long t0 = mb_hostile_now_ms();
	mb_client *c = NULL;
	void *p = NULL;
	HRESULT hr = mb_connect(address, &c);

	if (hr != S_OK) {
		printf("fail connect %s: %s\n", mb_hresult_name(hr), mb_last_error());
		return 1;
	}
	hr = mb_virtual_alloc(c, NULL, (SIZE_T)bytes, MEM_RESERVE | MEM_COMMIT, PAGE_READWRITE,
			      eTaskCritical, &p);
	long long ms = mb_hostile_now_ms() - t0;
	if (hr != S_OK) {
		printf("fail commit %s: %s\n", mb_hresult_name(hr), mb_last_error());
		mb_disconnect(c);
		return 1;
	}
	memset(p, 0x5a, (size_t)bytes);
	hr = mb_virtual_free(c, p, 0, MEM_RELEASE);
	mb_disconnect(c);
	if (hr != S_OK) {
		printf("fail release %s\n", mb_hresult_name(hr));
		return 1;
	}
	printf("ok %lld\n", ms);
	return 0;
}

void mb_hostile_roles(int argc, char **argv)
{
	if (argc == 4 && strcmp(argv[1], "honest") == 0) {
		fflush(stdout);
		exit(honest_role(argv[2], strtoull(argv[3], NULL, 0)));
	}
}

int mb_hostile_honest(const char *address, uint64_t bytes, long *ms)
{
	char cmd[600], line[300] = "";
	FILE *f;
	int rv = -1;

	snprintf(cmd, sizeof(cmd), "exec /proc/%d/exe honest '%s' %llu", (int)getpid(), address,
		 (unsigned long long)bytes);
	if ((f = popen(cmd, "r")) == NULL)
		return -1;
	if (fgets(line, sizeof(line), f) != NULL && sscanf(line, "ok %ld", ms) == 1)
		rv = 0;
	if (pclose(f) != 0)
		rv = -1;
	if (rv != 0)
		fprintf(stderr, "honest client: %s", line[0] ? line : "no answer\n");
	return rv;
}

long mb_hostile_honest_bound(const char *address, uint64_t bytes)
{
	long worst = 0, ms;

	for (int i = 0; i < 3; i++)
		if (mb_hostile_honest(address, bytes, &ms) == 0 && ms > worst)
			worst = ms;
	return worst * 20 > 2000 ? worst * 20 : 2000;
}

int mb_hostile_ctl_status(const char *address, long *ms)
{
	char cmd[700];
	long long t0 = mb_hostile_now_ms();
	int status;

	snprintf(cmd, sizeof(cmd), "exec '%s' -a '%s' -t 20000 status >/dev/null 2>&1",
		 MEMBROKERCTL_PATH, address);
	status = system(cmd);
	*ms = (long)(mb_hostile_now_ms() - t0);
	return status >= 0 && WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

static volatile sig_atomic_t stop_flood;

static void on_usr1(int sig)
{
	(void)sig;
	stop_flood = 1;
}

/*
 * Sends requests without reading a reply until SIGUSR1 (writes stall once the broker stops taking
 * them). Then reads what the broker still sends and closes: an attacker killed while replies are
 * stuck in its full socket buffer leaves nng 1.5.2 a connection it never frees (ARCHITECTURE.md),
 * which is not what this program measures.
 */
void mb_hostile_unread_flood(const char *path, bool watch)
{
	Membroker__V1__Request req = MEMBROKER__V1__REQUEST__INIT;
	Membroker__V1__MemoryLoad ml = MEMBROKER__V1__MEMORY_LOAD__INIT;
	Membroker__V1__Watch w = MEMBROKER__V1__WATCH__INIT;
	Membroker__V1__Hello hello = MEMBROKER__V1__HELLO__INIT;
	unsigned char reply[4096];
	struct timeval tv = {.tv_sec = 0, .tv_usec = 200000};
	int s = mb_hostile_sp_open(path);

	if (s < 0)
		_exit(2);
	signal(SIGUSR1, on_usr1);
	setsockopt(s, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
	setsockopt(s, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	if (watch) {
		hello.protocol_version = MB_PROTOCOL_VERSION;
		hello.name = "watch-flood";
		req.request_id = 1;
		req.body_case = MEMBROKER__V1__REQUEST__BODY_HELLO;
		req.hello = &hello;
		if (mb_hostile_sp_send(s, &req, 1) != 0 ||
		    mb_hostile_sp_recv(s, reply, sizeof(reply)) < 0)
			_exit(3);
		w.last_level = 3; /* High: the level of an empty budget, so each one parks */
		req.body_case = MEMBROKER__V1__REQUEST__BODY_WATCH;
		req.watch = &w;
	} else {
		req.body_case = MEMBROKER__V1__REQUEST__BODY_MEMORY_LOAD;
		req.memory_load = &ml;
	}
	for (uint32_t id = 2; !stop_flood; id++) {
		req.request_id = id;
		if (mb_hostile_sp_send(s, &req, id) != 0 && errno != EAGAIN && errno != EINTR)
			_exit(4); /* the broker closed us: not expected */
	}
	/* Drain: replies keep coming while the broker answers what it took (a 200 ms gap ends it;
	 * a reply cut by the timeout only ends it early). */
	while (mb_hostile_sp_recv(s, reply, sizeof(reply)) >= 0)
		;
	close(s);
	_exit(0);
}

int mb_hostile_newest_memfd(pid_t pid)
{
	char path[64], entry[320], link[256];
	int found = -1;
	DIR *d;
	struct dirent *e;

	snprintf(path, sizeof(path), "/proc/%d/fd", (int)pid);
	if ((d = opendir(path)) == NULL)
		return -1;
	while ((e = readdir(d)) != NULL) {
		snprintf(entry, sizeof(entry), "%s/%s", path, e->d_name);
		ssize_t n = readlink(entry, link, sizeof(link) - 1);
		if (n <= 0)
			continue;
		link[n] = 0;
		if (strstr(link, "memfd:") != NULL && atoi(e->d_name) > found)
			found = atoi(e->d_name);
	}
	closedir(d);
	return found;
}
