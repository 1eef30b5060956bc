/*
 * sdstore.c: a stand-in for systemd's notify socket and descriptor store (sdstore.h).
 */
#include "sdstore.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#define MAX_ENTRIES 4096

typedef struct entry {
	char name[256];
	int fd;
} entry;

struct mb_test_store {
	int sock;
	char path[108];
	unsigned capacity;
	pthread_t thread;
	pthread_mutex_t lock;
	bool stop;
	entry entries[MAX_ENTRIES];
	size_t n;
	unsigned ready, stopping;
	unsigned hold_ms;      /* the next barrier is answered this late */
	int barrier_fd;	       /* a barrier held, or -1 */
	long long barrier_due; /* when to answer it (CLOCK_MONOTONIC ms) */
};

static long long now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* The value of key= in a message of newline-separated assignments, or NULL. */
static const char *field(const char *msg, const char *key, char *out, size_t outlen)
{
	size_t klen = strlen(key);

	for (const char *p = msg; p != NULL && *p != '\0';) {
		const char *nl = strchr(p, '\n');
		size_t len = nl ? (size_t)(nl - p) : strlen(p);
		if (len > klen && strncmp(p, key, klen) == 0 && p[klen] == '=') {
			size_t vlen = len - klen - 1;
			if (vlen >= outlen)
				vlen = outlen - 1;
			memcpy(out, p + klen + 1, vlen);
			out[vlen] = '\0';
			return out;
		}
		p = nl ? nl + 1 : NULL;
	}
	return NULL;
}

static bool has_line(const char *msg, const char *line)
{
	char v[16], key[64];
	const char *eq = strchr(line, '=');

	snprintf(key, sizeof(key), "%.*s", (int)(eq - line), line);
	return field(msg, key, v, sizeof(v)) != NULL && strcmp(v, eq + 1) == 0;
}

/* One datagram: what systemd 252 does with it, as far as the broker uses it. */
static void handle(mb_test_store *st, const char *msg, int *fds, int nfds)
{
	char name[256];
	bool named = field(msg, "FDNAME", name, sizeof(name)) != NULL;

	pthread_mutex_lock(&st->lock);
	if (has_line(msg, "READY=1"))
		st->ready++;
	if (has_line(msg, "STOPPING=1"))
		st->stopping++;
	if (has_line(msg, "BARRIER=1") && nfds == 1 && st->hold_ms > 0 && st->barrier_fd < 0) {
		st->barrier_fd = fds[0];
		st->barrier_due = now_ms() + st->hold_ms;
		st->hold_ms = 0;
		nfds = 0;
	}
	if (has_line(msg, "FDSTOREREMOVE=1") && named) {
		for (size_t i = 0; i < st->n;) {
			if (strcmp(st->entries[i].name, name) == 0) {
				close(st->entries[i].fd);
				st->entries[i] = st->entries[--st->n];
			} else {
				i++;
			}
		}
	}
	if (has_line(msg, "FDSTORE=1")) {
		for (int i = 0; i < nfds; i++) {
			if (st->n >= st->capacity || st->n >= MAX_ENTRIES) {
				fprintf(stderr, "sdstore: store full, \"%s\" dropped\n", name);
				close(fds[i]);
				continue;
			}
			snprintf(st->entries[st->n].name, sizeof(st->entries[0].name), "%s",
				 named ? name : "stored");
			st->entries[st->n++].fd = fds[i];
		}
		nfds = 0;
	}
	pthread_mutex_unlock(&st->lock);
	/* Everything else, BARRIER=1's descriptor included (closing it is the answer). */
	for (int i = 0; i < nfds; i++)
		close(fds[i]);
}

static void *store_main(void *arg)
{
	mb_test_store *st = arg;
	char buf[4096];
	union {
		char b[CMSG_SPACE(sizeof(int) * 253) + CMSG_SPACE(sizeof(struct ucred))];
		struct cmsghdr align;
	} cbuf;

	for (;;) {
		struct pollfd p = {.fd = st->sock, .events = POLLIN};
		pthread_mutex_lock(&st->lock);
		bool stop = st->stop;
		if (st->barrier_fd >= 0 && (stop || now_ms() >= st->barrier_due)) {
			close(st->barrier_fd);
			st->barrier_fd = -1;
		}
		pthread_mutex_unlock(&st->lock);
		if (stop)
			break;
		if (poll(&p, 1, 50) <= 0)
			continue;
		struct iovec iov = {.iov_base = buf, .iov_len = sizeof(buf) - 1};
		struct msghdr mh = {.msg_iov = &iov,
				    .msg_iovlen = 1,
				    .msg_control = cbuf.b,
				    .msg_controllen = sizeof(cbuf.b)};
		ssize_t n = recvmsg(st->sock, &mh, MSG_CMSG_CLOEXEC | MSG_DONTWAIT);
		if (n < 0)
			continue;
		buf[n] = '\0';
		int fds[253], nfds = 0;
		for (struct cmsghdr *c = CMSG_FIRSTHDR(&mh); c != NULL; c = CMSG_NXTHDR(&mh, c)) {
			if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS)
				continue;
			int k = (int)((c->cmsg_len - CMSG_LEN(0)) / sizeof(int));
			memcpy(&fds[nfds], CMSG_DATA(c), (size_t)k * sizeof(int));
			nfds += k;
		}
		handle(st, buf, fds, nfds);
	}
	return NULL;
}

mb_test_store *mb_test_store_open(const char *dir, unsigned capacity)
{
	mb_test_store *st = calloc(1, sizeof(*st));
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	int one = 1;

	if (st == NULL)
		return NULL;
	st->capacity = capacity;
	st->barrier_fd = -1;
	snprintf(st->path, sizeof(st->path), "%s/notify.sock", dir);
	snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", st->path);
	unlink(st->path);
	st->sock = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	if (st->sock < 0 || bind(st->sock, (struct sockaddr *)&sa, sizeof(sa)) != 0 ||
	    setsockopt(st->sock, SOL_SOCKET, SO_PASSCRED, &one, sizeof(one)) != 0) {
		perror("sdstore: notify socket");
		if (st->sock >= 0)
			close(st->sock);
		free(st);
		return NULL;
	}
	pthread_mutex_init(&st->lock, NULL);
	if (pthread_create(&st->thread, NULL, store_main, st) != 0) {
		close(st->sock);
		free(st);
		return NULL;
	}
	return st;
}

void mb_test_store_close(mb_test_store *st)
{
	if (st == NULL)
		return;
	pthread_mutex_lock(&st->lock);
	st->stop = true;
	pthread_mutex_unlock(&st->lock);
	pthread_join(st->thread, NULL);
	for (size_t i = 0; i < st->n; i++)
		close(st->entries[i].fd);
	close(st->sock);
	unlink(st->path);
	pthread_mutex_destroy(&st->lock);
	free(st);
}

/* What the broker's process gets: a copy of the store taken before the fork. */
typedef struct handout {
	mb_test_store *st;
	entry *entries;
	size_t n;
} handout;

static void child_setup(void *arg)
{
	handout *h = arg;
	char num[32], *names;
	size_t len = 1;

	setenv("NOTIFY_SOCKET", h->st->path, 1);
	snprintf(num, sizeof(num), "%u", h->st->capacity);
	setenv("FDSTORE", num, 1);
	if (h->n == 0)
		return;
	/* Out of the way first, then to 3.. in order (dup2 clears close-on-exec). */
	int *tmp = calloc(h->n, sizeof(int));
	for (size_t i = 0; i < h->n; i++) {
		tmp[i] = fcntl(h->entries[i].fd, F_DUPFD, 3 + (int)h->n + 64);
		len += strlen(h->entries[i].name) + 1;
	}
	names = calloc(1, len);
	for (size_t i = 0; i < h->n; i++) {
		dup2(tmp[i], 3 + (int)i);
		close(tmp[i]);
		if (i > 0)
			strcat(names, ":");
		strcat(names, h->entries[i].name);
	}
	snprintf(num, sizeof(num), "%zu", h->n);
	setenv("LISTEN_FDS", num, 1);
	snprintf(num, sizeof(num), "%d", (int)getpid());
	setenv("LISTEN_PID", num, 1);
	setenv("LISTEN_FDNAMES", names, 1);
}

int mb_test_store_start(mb_test_store *st, mb_test_broker *b, const char *address,
			const char *const *extra_args)
{
	handout h = {.st = st};
	int rv;

	pthread_mutex_lock(&st->lock);
	h.n = st->n;
	h.entries = calloc(h.n ? h.n : 1, sizeof(entry));
	memcpy(h.entries, st->entries, h.n * sizeof(entry));
	pthread_mutex_unlock(&st->lock);
	rv = mb_test_broker_start_with(b, address, extra_args, child_setup, &h);
	free(h.entries);
	return rv;
}

size_t mb_test_store_count(mb_test_store *st, const char *prefix)
{
	size_t n = 0;

	pthread_mutex_lock(&st->lock);
	for (size_t i = 0; i < st->n; i++)
		n += strncmp(st->entries[i].name, prefix, strlen(prefix)) == 0;
	pthread_mutex_unlock(&st->lock);
	return n;
}

bool mb_test_store_has(mb_test_store *st, const char *name)
{
	bool found = false;

	pthread_mutex_lock(&st->lock);
	for (size_t i = 0; i < st->n; i++)
		found |= strcmp(st->entries[i].name, name) == 0;
	pthread_mutex_unlock(&st->lock);
	return found;
}

/* The descriptor named name, duplicated, or -1. */
static int find_dup(mb_test_store *st, const char *name)
{
	int fd = -1;

	pthread_mutex_lock(&st->lock);
	for (size_t i = 0; i < st->n && fd < 0; i++)
		if (strcmp(st->entries[i].name, name) == 0)
			fd = fcntl(st->entries[i].fd, F_DUPFD_CLOEXEC, 3);
	pthread_mutex_unlock(&st->lock);
	return fd;
}

int mb_test_store_rewrite(mb_test_store *st, const char *name, const void *data, size_t len)
{
	int fd = find_dup(st, name);
	int rv = 0;

	if (fd < 0)
		return -1;
	if (ftruncate(fd, 0) != 0 || (len > 0 && pwrite(fd, data, len, 0) != (ssize_t)len))
		rv = -1;
	close(fd);
	return rv;
}

int mb_test_store_read(mb_test_store *st, const char *name, void **data, size_t *len)
{
	int fd = find_dup(st, name);
	struct stat sb;

	*data = NULL;
	*len = 0;
	if (fd < 0)
		return -1;
	if (fstat(fd, &sb) != 0) {
		close(fd);
		return -1;
	}
	*data = malloc((size_t)sb.st_size + 1);
	*len = (size_t)pread(fd, *data, (size_t)sb.st_size, 0);
	close(fd);
	return *len == (size_t)sb.st_size ? 0 : -1;
}

void mb_test_store_hold_barrier(mb_test_store *st, unsigned ms)
{
	pthread_mutex_lock(&st->lock);
	st->hold_ms = ms;
	pthread_mutex_unlock(&st->lock);
}

unsigned mb_test_store_ready(mb_test_store *st)
{
	pthread_mutex_lock(&st->lock);
	unsigned n = st->ready;
	pthread_mutex_unlock(&st->lock);
	return n;
}

unsigned mb_test_store_stopping(mb_test_store *st)
{
	pthread_mutex_lock(&st->lock);
	unsigned n = st->stopping;
	pthread_mutex_unlock(&st->lock);
	return n;
}
