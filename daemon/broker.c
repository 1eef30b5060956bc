/*
 * broker.c: the entry points: connection lifecycle, section hand-over and adoption, and the
 * operations other threads run against the state, each under the broker lock.
 */
#include "broker.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <poll.h>
#include <sys/stat.h>
#include <sys/epoll.h>
#include <sys/syscall.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "arbiter.h"
#include "audit.h"
#include "clock.h"
#include "credit.h"
#include "log.h"
#include "mb_win32.h"
#include "section.h"

int mb_broker_init(mb_broker *b, uint64_t budget)
{
	memset(b, 0, sizeof(*b));
	if (pthread_mutex_init(&b->lock, NULL) != 0)
		return -ENOMEM;
	mb_config_defaults(&b->conf);
	mb_books_init(&b->books, budget, &b->conf);
	mb_registry_init(&b->reg);
	b->section_size = MB_ADDRESS_LIMIT;
	for (int i = 0; i < MB_LEVELS; i++) {
		TAILQ_INIT(&b->waiters[i]);
		TAILQ_INIT(&b->resets[i]);
	}
	TAILQ_INIT(&b->watchers);
	b->pressure = mb_pressure_next(0, &b->books.ledger, false);
	b->death_epfd = epoll_create1(EPOLL_CLOEXEC);
	return 0;
}

static void drop_detached(mb_broker *b, int i, bool punch);

/* Caller holds the lock. */
static void end_session(mb_broker *b, mb_session *s)
{
	mb_arbiter_drop_session(b, s);
	mb_registry_remove(&b->reg, s);
	mb_books_leave(&b->books, s);
	/* At shutdown clients keep their memory: it stays mapped and readable in them. */
	mb_session_free(s, !b->stopping);
	if (!b->stopping)
		mb_arbiter_grant_waiters(b);
}

void mb_broker_fini(mb_broker *b)
{
	mb_session *s;

	pthread_mutex_lock(&b->lock);
	b->stopping = true;
	while ((s = mb_registry_first(&b->reg)) != NULL)
		end_session(b, s);
	for (int level = 0; level < MB_LEVELS; level++) {
		mb_reset_range *r;
		while ((r = TAILQ_FIRST(&b->resets[level])) != NULL) {
			TAILQ_REMOVE(&b->resets[level], r, link);
			free(r);
		}
	}
	for (int i = 0; i < b->nbanned; i++)
		close(b->banned[i].pidfd);
	b->nbanned = 0;
	/* Like every section at shutdown: its client keeps the memory it has mapped. */
	while (b->ndetached > 0)
		drop_detached(b, 0, false);
	pthread_mutex_unlock(&b->lock);
	pthread_mutex_destroy(&b->lock);
	if (b->death_epfd >= 0)
		close(b->death_epfd);
}

int mb_broker_connect(mb_broker *b, uint32_t pipe_id, pid_t pid, uid_t uid, gid_t gid)
{
	mb_session *s = mb_session_new(pipe_id, pid, uid, gid);
	int rv = 0;

	if (s == NULL)
		return -ENOMEM;
	/* A small race remains: the pid could be reused between connect and here (SO_PEERPIDFD
	 * would close it, but needs Linux 6.5). */
	s->pidfd = (int)syscall(SYS_pidfd_open, pid, 0);
	if (s->pidfd >= 0 && b->death_epfd >= 0) {
		struct epoll_event ev = {.events = EPOLLIN, .data.u64 = pipe_id};
		if (epoll_ctl(b->death_epfd, EPOLL_CTL_ADD, s->pidfd, &ev) != 0) {
			close(s->pidfd);
			s->pidfd = -1;
		}
	}
	pthread_mutex_lock(&b->lock);
	uint32_t limit =
	    b->conf.sessions_per_uid ? b->conf.sessions_per_uid : MB_DEFAULT_SESSIONS_PER_UID;
	uint32_t same = uid != 0 ? mb_registry_count_uid(&b->reg, uid) : 0;
	if (uid != 0 && same >= limit) {
		mb_log(LOG_WARNING,
		       "uid %u already holds %u connections (the limit); refusing pid %d",
		       (unsigned)uid, same, (int)pid);
		rv = -EMFILE;
		mb_session_free(s, true);
	} else if (mb_registry_add(&b->reg, s) != 0) {
		rv = -EEXIST;
		mb_session_free(s, true);
	}
	pthread_mutex_unlock(&b->lock);
	return rv;
}

bool mb_pidfd_exited(int pidfd)
{
	struct pollfd p = {.fd = pidfd, .events = POLLIN};
	return poll(&p, 1, 0) != 0;
}

/*
 * The connection closed but the process lives: most likely the connection dropped and the client
 * will reconnect and hand its section back (mb_broker_adopt_section). Punching the section now
 * would wipe the memory it still has mapped, so the section is set aside instead. Caller holds
 * the lock; false when it cannot be (then the session ends as usual).
 */
static bool detach_section(mb_broker *b, mb_session *s)
{
	struct stat st;
	int pidfd;

	if (b->stopping || !s->hello || s->section_fd < 0 || s->pidfd < 0 ||
	    b->ndetached == (int)(sizeof(b->detached) / sizeof(b->detached[0])) ||
	    mb_pidfd_exited(s->pidfd) || fstat(s->section_fd, &st) != 0)
		return false;
	pidfd = fcntl(s->pidfd, F_DUPFD_CLOEXEC, 3);
	if (pidfd < 0)
		return false;
	b->detached[b->ndetached].fd = s->section_fd;
	b->detached[b->ndetached].pidfd = pidfd;
	b->detached[b->ndetached].pid = s->pid;
	b->detached[b->ndetached].dev = st.st_dev;
	b->detached[b->ndetached].ino = st.st_ino;
	b->detached[b->ndetached].deadline_ms = mb_now_ms() + MB_DETACH_GRACE_MS;
	b->ndetached++;
	s->section_fd = -1;
	return true;
}

/* Forgets detached entry i; punch: free its memory first. Caller holds the lock. */
static void drop_detached(mb_broker *b, int i, bool punch)
{
	if (punch)
		mb_section_discard(b->detached[i].fd, 0, MB_ADDRESS_LIMIT);
	close(b->detached[i].fd);
	close(b->detached[i].pidfd);
	b->detached[i] = b->detached[--b->ndetached];
}

void mb_broker_sweep_detached(mb_broker *b)
{
	uint64_t now = mb_now_ms();

	pthread_mutex_lock(&b->lock);
	for (int i = 0; i < b->ndetached;) {
		bool alive = !mb_pidfd_exited(b->detached[i].pidfd);
		if (alive && now < b->detached[i].deadline_ms) {
			i++;
			continue;
		}
		mb_log(alive ? LOG_NOTICE : LOG_DEBUG,
		       "pid %d %s: the memory of its dropped connection is freed",
		       b->detached[i].pid, alive ? "did not reconnect in time" : "exited");
		drop_detached(b, i, true);
	}
	pthread_mutex_unlock(&b->lock);
}

void mb_broker_disconnect(mb_broker *b, uint32_t pipe_id)
{
	mb_session *s;

	pthread_mutex_lock(&b->lock);
	s = mb_registry_by_pipe(&b->reg, pipe_id);
	if (s != NULL) {
		mb_log(LOG_DEBUG, "session %llu (pid %d uid %u) ended, %llu bytes returned",
		       (unsigned long long)s->id, (int)s->pid, (unsigned)s->uid,
		       (unsigned long long)mb_session_committed(s));
		detach_section(b, s);
		end_session(b, s);
	}
	pthread_mutex_unlock(&b->lock);
}

void mb_broker_process_exited(mb_broker *b, uint32_t pipe_id)
{
	mb_session *s;

	/* The session ends now; its connection is left to close by itself (when the last
	 * process holding the socket exits). Closing it from here raced nng 1.5.2's own close of
	 * a dead peer's pipe and could wedge nng's reaper. */
	pthread_mutex_lock(&b->lock);
	s = mb_registry_by_pipe(&b->reg, pipe_id);
	if (s != NULL) {
		mb_log(LOG_DEBUG, "client pid %d exited; ending its session", (int)s->pid);
		end_session(b, s);
	}
	pthread_mutex_unlock(&b->lock);
}

/* Compares tokens in constant time, so a timing probe learns nothing about a guessed prefix. */
static int token_equal(const uint8_t *a, const uint8_t *b, size_t n)
{
	uint8_t diff = 0;
	for (size_t i = 0; i < n; i++)
		diff |= a[i] ^ b[i];
	return diff == 0;
}

/* The session a hand-over is for, if uid, pid and token match. Burns the token once uid and pid
 * match, whether the token does or not. */
static mb_session *claim_token(mb_broker *b, uint64_t session_id, const uint8_t *token,
			       size_t token_len, uid_t uid, pid_t pid)
{
	mb_session *s = mb_registry_by_id(&b->reg, session_id);

	if (s == NULL || s->token_used)
		return NULL;
	/* Only the session's own process may try: another process's guess must not burn the
	 * token its client is about to use. */
	if (s->uid != uid || s->pid != pid)
		return NULL;
	/* A wrong guess by that process burns the token too: nobody gets to try twice. */
	s->token_used = true;
	if (token_len != MB_WIRE_TOKEN_LEN || !token_equal(s->token, token, MB_WIRE_TOKEN_LEN))
		return NULL;
	return s;
}

int mb_broker_handover(mb_broker *b, uint64_t session_id, const uint8_t *token, size_t token_len,
		       uid_t uid, pid_t pid)
{
	mb_session *s;
	int fd = -EPERM;

	pthread_mutex_lock(&b->lock);
	s = claim_token(b, session_id, token, token_len, uid, pid);
	if (s != NULL) {
		fd = fcntl(s->section_fd, F_DUPFD_CLOEXEC, 3);
		if (fd < 0)
			fd = -errno;
	}
	pthread_mutex_unlock(&b->lock);
	return fd;
}

int mb_broker_adopt_section(mb_broker *b, uint64_t session_id, const uint8_t *token,
			    size_t token_len, uid_t uid, pid_t pid, int fd)
{
	const int need = F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL;
	const int forbidden = F_SEAL_WRITE | F_SEAL_FUTURE_WRITE;
	struct stat st;
	mb_session *s;
	int seals, rv = -EPERM;

	/* Only a memfd carries seals; these exact ones mean a section nobody can resize, seal
	 * further or write-protect against the broker's hole punches. */
	seals = fcntl(fd, F_GET_SEALS);
	if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode) || seals < 0 || (seals & need) != need ||
	    (seals & forbidden) != 0 || (uint64_t)st.st_size != b->section_size ||
	    (fcntl(fd, F_GETFL) & O_ACCMODE) != O_RDWR)
		return -EINVAL;
	pthread_mutex_lock(&b->lock);
	s = claim_token(b, session_id, token, token_len, uid, pid);
	if (s != NULL && s->map.count == 0) {
		/* Credit granted on the section being replaced is void; the adopted one's word is
		 * reset (a previous broker's grant means nothing here). */
		mb_credit_void(&b->books, s);
		mb_section_unmap_credit(s->credit_word);
		close(s->section_fd);
		s->section_fd = fd;
		s->credit_word = mb_section_map_credit(fd);
		mb_log(LOG_INFO,
		       "client pid %d handed its section back (session %llu): it reconnected and "
		       "re-registers what it holds",
		       (int)s->pid, (unsigned long long)s->id);
		/* Set aside when its connection dropped: the client has it again. */
		for (int i = 0; i < b->ndetached; i++)
			if (b->detached[i].dev == st.st_dev && b->detached[i].ino == st.st_ino) {
				drop_detached(b, i, false);
				break;
			}
		s->adopted = true;
		s->adopting = true;
		rv = 0;
	}
	pthread_mutex_unlock(&b->lock);
	return rv;
}

void mb_broker_apply_config(mb_broker *b, const mb_config *conf)
{
	pthread_mutex_lock(&b->lock);
	/* Take all credit back first: a smaller amount or none may be configured now, and the
	 * groups are recomputed from the sessions' charges below. */
	mb_credit_take_back_all(&b->books, &b->reg);
	b->conf = *conf;
	mb_books_clear_groups(&b->books);
	for (mb_session *s = mb_registry_first(&b->reg); s != NULL; s = mb_registry_next(s))
		if (s->hello)
			mb_books_join_group(&b->books, s);
	mb_arbiter_grant_waiters(b);
	pthread_mutex_unlock(&b->lock);
}

int mb_broker_set_budget(mb_broker *b, uint64_t bytes, uint64_t *old, uint64_t *in_use)
{
	int rv = 0;

	pthread_mutex_lock(&b->lock);
	*old = b->books.ledger.budget;
	/* Unused credit is not in use: it goes back before the new budget is judged. */
	if (bytes < b->books.ledger.committed)
		mb_credit_take_back_all(&b->books, &b->reg);
	*in_use = b->books.ledger.committed;
	if (bytes < *in_use) {
		/* The ledger never holds more than the budget: commits are not taken back. */
		rv = -EBUSY;
	} else {
		b->books.ledger.budget = bytes;
		mb_arbiter_grant_waiters(b);
	}
	pthread_mutex_unlock(&b->lock);
	return rv;
}

uint32_t mb_broker_abandon_all(mb_broker *b)
{
	uint32_t n;

	pthread_mutex_lock(&b->lock);
	n = mb_arbiter_abandon_all(b);
	pthread_mutex_unlock(&b->lock);
	return n;
}

uint64_t mb_broker_expire(mb_broker *b, uint64_t now)
{
	uint64_t next;

	pthread_mutex_lock(&b->lock);
	next = mb_arbiter_expire(b, now);
	pthread_mutex_unlock(&b->lock);
	return next;
}

uint32_t mb_broker_parked(mb_broker *b)
{
	uint32_t n;

	pthread_mutex_lock(&b->lock);
	n = mb_arbiter_parked(b);
	pthread_mutex_unlock(&b->lock);
	return n;
}

/* Refuses future sessions of s's process until it exits (repeated offences). Caller holds the
 * lock. */
static void ban(mb_broker *b, const mb_session *s)
{
	int fd;

	if (s->pidfd < 0 || mb_broker_banned(b, s->pid))
		return;
	if (b->nbanned == (int)(sizeof(b->banned) / sizeof(b->banned[0]))) {
		/* Full: the oldest ban gives way. */
		close(b->banned[0].pidfd);
		memmove(&b->banned[0], &b->banned[1],
			sizeof(b->banned[0]) * (size_t)(b->nbanned - 1));
		b->nbanned--;
	}
	fd = fcntl(s->pidfd, F_DUPFD_CLOEXEC, 3);
	if (fd < 0)
		return;
	b->banned[b->nbanned].pid = s->pid;
	b->banned[b->nbanned].pidfd = fd;
	b->nbanned++;
}

/* The offender's uid: its next process would otherwise connect at once and write again. Not the
 * broker's own uid, whose self-probe keeps the watchdog fed (and root, as the broker, when it
 * runs as root): an offender of that uid is the operator's mistake (README). */
static void throttle_uid(mb_broker *b, const mb_session *s)
{
	if (s->uid == geteuid())
		return;
	uint64_t ms = mb_throttle_strike(&b->throttle, s->uid, mb_now_ms());
	mb_log(LOG_WARNING, "uid %u: new sessions refused for %" PRIu64 " s", (unsigned)s->uid,
	       ms / 1000);
}

bool mb_broker_banned(mb_broker *b, pid_t pid)
{
	bool found = false;

	for (int i = 0; i < b->nbanned;) {
		if (mb_pidfd_exited(b->banned[i].pidfd)) {
			/* The process exited: its pid may be reused by an innocent one. */
			close(b->banned[i].pidfd);
			b->banned[i] = b->banned[--b->nbanned];
			continue;
		}
		found |= b->banned[i].pid == pid;
		i++;
	}
	return found;
}

uint64_t mb_broker_audit(mb_broker *b)
{
	uint64_t discarded = 0;
	uint32_t to_close[16];
	int nclose;
	void (*close_pipe)(void *, uint32_t);
	void *close_arg;

	pthread_mutex_lock(&b->lock);
	nclose =
	    mb_audit_all(b, to_close, (int)(sizeof(to_close) / sizeof(to_close[0])), &discarded);
	for (int i = 0; i < nclose; i++) {
		mb_session *s = mb_registry_by_pipe(&b->reg, to_close[i]);
		mb_log(LOG_WARNING, "disconnecting client pid %d after repeated offences",
		       (int)s->pid);
		ban(b, s);
		throttle_uid(b, s);
	}
	mb_arbiter_grant_waiters(b);
	close_pipe = b->close_pipe;
	close_arg = b->close_pipe_arg;
	pthread_mutex_unlock(&b->lock);
	/* Outside the lock: nng's pipe callbacks take it (see mb_broker_process_exited). More
	 * offenders than fit here are closed at the next audit. */
	for (int i = 0; i < nclose && close_pipe != NULL; i++)
		close_pipe(close_arg, to_close[i]);
	return discarded;
}

uint64_t mb_broker_sum_sessions(mb_broker *b)
{
	uint64_t sum = 0;

	pthread_mutex_lock(&b->lock);
	for (mb_session *s = mb_registry_first(&b->reg); s != NULL; s = mb_registry_next(s))
		sum += mb_session_charged(s);
	pthread_mutex_unlock(&b->lock);
	return sum;
}

void mb_broker_usage(mb_broker *b, uint32_t *clients, uint64_t *in_use, uint64_t *budget,
		     uint32_t *waiting)
{
	pthread_mutex_lock(&b->lock);
	*clients = b->reg.clients;
	*in_use = mb_memory_in_use(&b->books, &b->reg);
	*budget = b->books.ledger.budget;
	*waiting = b->nwaiters;
	pthread_mutex_unlock(&b->lock);
}
