/*
 * fdstore.c: storing and removing descriptors in systemd's store, in order, off the broker lock.
 */
#include "fdstore.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <systemd/sd-daemon.h>

#include "log.h"

/* One message for systemd, with the descriptors it carries (owned by the op). */
typedef struct op {
	struct op *next;
	char msg[128];
	int fds[1];
	int nfds;
} op;

struct mb_fdstore {
	pthread_mutex_t lock;
	pthread_cond_t cv;   /* work queued, or stop */
	pthread_cond_t idle; /* the queue ran empty */
	op *head, *tail;
	bool busy; /* the thread is sending one */
	bool stop;
	uint32_t capacity; /* $FDSTORE */
	uint32_t held;	   /* descriptors stored and not removed, as far as the broker knows */
	bool full_logged;
	pthread_t thread;
};

static void send_op(op *o)
{
	static mb_log_limit limit = MB_LOG_LIMIT_INIT;
	int rv = sd_pid_notify_with_fds(0, 0, o->msg, o->nfds ? o->fds : NULL, (unsigned)o->nfds);

	if (rv < 0)
		mb_log_limited(&limit, LOG_WARNING, "descriptor store: cannot send \"%s\": %s",
			       strchr(o->msg, '\n') ? strrchr(o->msg, '\n') + 1 : o->msg,
			       strerror(-rv));
	for (int i = 0; i < o->nfds; i++)
		close(o->fds[i]);
	free(o);
}

static void *store_main(void *arg)
{
	mb_fdstore *st = arg;

	pthread_mutex_lock(&st->lock);
	for (;;) {
		op *o = st->head;
		if (o == NULL) {
			pthread_cond_broadcast(&st->idle);
			if (st->stop)
				break;
			pthread_cond_wait(&st->cv, &st->lock);
			continue;
		}
		st->head = o->next;
		if (st->head == NULL)
			st->tail = NULL;
		st->busy = true;
		pthread_mutex_unlock(&st->lock);
		send_op(o);
		pthread_mutex_lock(&st->lock);
		st->busy = false;
	}
	pthread_mutex_unlock(&st->lock);
	return NULL;
}

int mb_fdstore_open(mb_fdstore **out)
{
	const char *cap = getenv("FDSTORE"), *sock = getenv("NOTIFY_SOCKET");
	unsigned long n;
	char *end;
	mb_fdstore *st;

	*out = NULL;
	if (sock == NULL || sock[0] == '\0' || cap == NULL || cap[0] == '\0')
		return 0;
	errno = 0;
	n = strtoul(cap, &end, 10);
	if (errno != 0 || *end != '\0' || n == 0)
		return 0;
	st = calloc(1, sizeof(*st));
	if (st == NULL)
		return -ENOMEM;
	st->capacity = n > UINT32_MAX ? UINT32_MAX : (uint32_t)n;
	pthread_mutex_init(&st->lock, NULL);
	pthread_cond_init(&st->cv, NULL);
	pthread_cond_init(&st->idle, NULL);
	if (pthread_create(&st->thread, NULL, store_main, st) != 0) {
		pthread_mutex_destroy(&st->lock);
		pthread_cond_destroy(&st->cv);
		pthread_cond_destroy(&st->idle);
		free(st);
		return -EAGAIN;
	}
	*out = st;
	return 0;
}

void mb_fdstore_flush(mb_fdstore *st)
{
	if (st == NULL)
		return;
	pthread_mutex_lock(&st->lock);
	while (st->head != NULL || st->busy)
		pthread_cond_wait(&st->idle, &st->lock);
	pthread_mutex_unlock(&st->lock);
}

void mb_fdstore_close(mb_fdstore *st)
{
	if (st == NULL)
		return;
	pthread_mutex_lock(&st->lock);
	st->stop = true;
	pthread_cond_signal(&st->cv);
	pthread_mutex_unlock(&st->lock);
	pthread_join(st->thread, NULL);
	pthread_mutex_destroy(&st->lock);
	pthread_cond_destroy(&st->cv);
	pthread_cond_destroy(&st->idle);
	free(st);
}

uint32_t mb_fdstore_capacity(const mb_fdstore *st)
{
	return st != NULL ? st->capacity : 0;
}

void mb_fdstore_count_restored(mb_fdstore *st, uint32_t n)
{
	if (st == NULL)
		return;
	pthread_mutex_lock(&st->lock);
	st->held += n;
	pthread_mutex_unlock(&st->lock);
}

/* Queues msg with a duplicate of fd (fd < 0: none). Caller holds st->lock. false if the
 * duplicate cannot be made. */
static bool queue(mb_fdstore *st, const char *msg, int fd)
{
	op *o = calloc(1, sizeof(*o));

	if (o == NULL)
		return false;
	snprintf(o->msg, sizeof(o->msg), "%s", msg);
	if (fd >= 0) {
		o->fds[0] = fcntl(fd, F_DUPFD_CLOEXEC, 3);
		if (o->fds[0] < 0) {
			free(o);
			return false;
		}
		o->nfds = 1;
	}
	if (st->tail != NULL)
		st->tail->next = o;
	else
		st->head = o;
	st->tail = o;
	pthread_cond_signal(&st->cv);
	return true;
}

void mb_fdstore_section_name(char *buf, size_t n, const mb_section *s)
{
	snprintf(buf, n, "section-%" PRIu64 "-%d-%u-%u", s->id, (int)s->pid, (unsigned)s->uid,
		 (unsigned)s->gid);
}

static void owner_name(char *buf, size_t n, uint64_t id)
{
	snprintf(buf, n, "owner-%" PRIu64, id);
}

void mb_fdstore_keep_section(mb_fdstore *st, mb_section *s)
{
	char name[96], msg[128];
	uint32_t need = s->pidfd >= 0 ? 2 : 1;

	if (st == NULL || s->section_fd < 0)
		return;
	pthread_mutex_lock(&st->lock);
	if (st->held + need > st->capacity) {
		if (!st->full_logged)
			mb_log(LOG_WARNING,
			       "descriptor store full (FDSTORE=%u): section %" PRIu64
			       " and later ones do not survive a restart of the broker (their "
			       "clients register again); raise FileDescriptorStoreMax=",
			       st->capacity, s->id);
		st->full_logged = true;
		pthread_mutex_unlock(&st->lock);
		return;
	}
	mb_fdstore_section_name(name, sizeof(name), s);
	snprintf(msg, sizeof(msg), "FDSTORE=1\nFDPOLL=0\nFDNAME=%s", name);
	if (queue(st, msg, s->section_fd)) {
		s->stored = true;
		st->held++;
		if (s->pidfd >= 0) {
			owner_name(name, sizeof(name), s->id);
			snprintf(msg, sizeof(msg), "FDSTORE=1\nFDPOLL=0\nFDNAME=%s", name);
			if (queue(st, msg, s->pidfd))
				st->held++;
		}
	}
	pthread_mutex_unlock(&st->lock);
}

void mb_fdstore_forget(mb_fdstore *st, const char *name)
{
	char msg[128];

	if (st == NULL)
		return;
	snprintf(msg, sizeof(msg), "FDSTOREREMOVE=1\nFDNAME=%s", name);
	pthread_mutex_lock(&st->lock);
	queue(st, msg, -1);
	pthread_mutex_unlock(&st->lock);
}

void mb_fdstore_forget_section(mb_fdstore *st, mb_section *s)
{
	char name[96];

	if (st == NULL || !s->stored)
		return;
	mb_fdstore_section_name(name, sizeof(name), s);
	mb_fdstore_forget(st, name);
	owner_name(name, sizeof(name), s->id);
	mb_fdstore_forget(st, name);
	s->stored = false;
	pthread_mutex_lock(&st->lock);
	uint32_t n = s->pidfd >= 0 ? 2 : 1;
	st->held -= st->held < n ? st->held : n;
	if (st->held + 2 <= st->capacity)
		st->full_logged = false;
	pthread_mutex_unlock(&st->lock);
}

int mb_fdstore_keep_snapshot(mb_fdstore *st, int fd, uint32_t timeout_ms)
{
	bool queued;
	int rv;

	if (st == NULL)
		return -ENOTSUP;
	pthread_mutex_lock(&st->lock);
	queued = queue(st, "FDSTORE=1\nFDPOLL=0\nFDNAME=" MB_FDSTORE_SNAPSHOT, fd);
	pthread_mutex_unlock(&st->lock);
	if (!queued)
		return -ENOMEM;
	mb_fdstore_flush(st);
	/* The process exits next: without the barrier, systemd could read the message after it
	 * no longer knows whose pid sent it, and drop it. */
	rv = sd_notify_barrier(0, (uint64_t)timeout_ms * 1000);
	return rv < 0 ? rv : 0;
}

bool mb_fdstore_parse_section(const char *name, uint64_t *id, pid_t *pid, uid_t *uid, gid_t *gid)
{
	unsigned long long i;
	int p, used = 0;
	unsigned u, g;

	if (sscanf(name, "section-%llu-%d-%u-%u%n", &i, &p, &u, &g, &used) != 4 ||
	    name[used] != '\0' || i == 0 || p <= 0)
		return false;
	*id = i;
	*pid = p;
	*uid = u;
	*gid = g;
	return true;
}

bool mb_fdstore_parse_owner(const char *name, uint64_t *id)
{
	unsigned long long i;
	int used = 0;

	if (sscanf(name, "owner-%llu%n", &i, &used) != 1 || name[used] != '\0' || i == 0)
		return false;
	*id = i;
	return true;
}
