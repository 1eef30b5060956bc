/*
 * broker.c: session table, connection lifecycle and section hand-over.
 */
#include "broker.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <sys/stat.h>
#include <sys/epoll.h>
#include <sys/syscall.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "credit.h"
#include "log.h"
#include "mb_win32.h"
#include "section.h"

static int cmp_pipe(const mb_session *a, const mb_session *b)
{
	return a->pipe_id < b->pipe_id ? -1 : a->pipe_id > b->pipe_id;
}

static int cmp_id(const mb_session *a, const mb_session *b)
{
	return a->id < b->id ? -1 : a->id > b->id;
}

/* libbsd's RB_GENERATE_STATIC uses an undefined __unused on Debian 12: spell it out. */
RB_GENERATE_INTERNAL(mb_session_pipe_tree, mb_session, by_pipe, cmp_pipe,
		     __attribute__((unused)) static)
RB_GENERATE_INTERNAL(mb_session_id_tree, mb_session, by_id, cmp_id, __attribute__((unused)) static)

int mb_broker_init(mb_broker *b, uint64_t budget)
{
	memset(b, 0, sizeof(*b));
	if (pthread_mutex_init(&b->lock, NULL) != 0)
		return -ENOMEM;
	mb_ledger_init(&b->ledger, budget);
	mb_config_defaults(&b->conf);
	RB_INIT(&b->by_pipe);
	RB_INIT(&b->by_id);
	b->next_session_id = 1;
	b->section_size = MB_ADDRESS_LIMIT;
	for (int i = 0; i < MB_LEVELS; i++) {
		TAILQ_INIT(&b->waiters[i]);
		TAILQ_INIT(&b->resets[i]);
	}
	TAILQ_INIT(&b->watchers);
	b->pressure = mb_pressure_next(0, &b->ledger, false);
	b->death_epfd = epoll_create1(EPOLL_CLOEXEC);
	return 0;
}

/* Answers the session's parked requests and forgets its MEM_RESET ranges. Caller holds the lock. */
static void drop_pending(mb_broker *b, mb_session *s)
{
	mb_parked *p, *ptmp;
	mb_reset_range *r, *rtmp;

	for (int level = 0; level < MB_LEVELS; level++)
		TAILQ_FOREACH_SAFE(p, &b->waiters[level], link, ptmp)
			if (p->pipe_id == s->pipe_id) {
				b->waits_abandoned++;
				mb_broker_finish_parked(b, p, HOST_E_ABANDONED,
							"the client disconnected");
			}
	TAILQ_FOREACH_SAFE(p, &b->watchers, link, ptmp)
		if (p->pipe_id == s->pipe_id)
			mb_broker_finish_parked(b, p, S_OK, NULL);
	for (int level = 0; level < MB_LEVELS && s->resets > 0; level++)
		TAILQ_FOREACH_SAFE(r, &b->resets[level], link, rtmp)
			if (r->pipe_id == s->pipe_id) {
				TAILQ_REMOVE(&b->resets[level], r, link);
				free(r);
				s->resets--;
			}
}

static void drop_detached(mb_broker *b, int i, bool punch);

/* Caller holds the lock. */
static void end_session(mb_broker *b, mb_session *s)
{
	drop_pending(b, s);
	RB_REMOVE(mb_session_pipe_tree, &b->by_pipe, s);
	if (s->hello) {
		RB_REMOVE(mb_session_id_tree, &b->by_id, s);
		b->clients--;
	}
	b->sessions--;
	b->credit_total -= s->credit;
	mb_broker_credit(b, s, mb_session_charged(s));
	if (s->group >= 0 && b->group_sessions[s->group] > 0)
		b->group_sessions[s->group]--;
	/* At shutdown clients keep their memory: it stays mapped and readable in them. */
	mb_session_free(s, !b->stopping);
	if (!b->stopping)
		mb_broker_grant_waiters(b);
}

void mb_broker_fini(mb_broker *b)
{
	mb_session *s;

	pthread_mutex_lock(&b->lock);
	b->stopping = true;
	while ((s = RB_MIN(mb_session_pipe_tree, &b->by_pipe)) != NULL)
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
	uint32_t same = 0;
	if (uid != 0)
		for (mb_session *o = RB_MIN(mb_session_pipe_tree, &b->by_pipe); o != NULL;
		     o = RB_NEXT(mb_session_pipe_tree, &b->by_pipe, o))
			same += o->uid == uid;
	if (uid != 0 && same >= limit) {
		mb_log(LOG_WARNING,
		       "uid %u already holds %u connections (the limit); refusing pid %d",
		       (unsigned)uid, same, (int)pid);
		rv = -EMFILE;
		mb_session_free(s, true);
	} else if (RB_INSERT(mb_session_pipe_tree, &b->by_pipe, s) != NULL) {
		rv = -EEXIST;
		mb_session_free(s, true);
	} else {
		b->sessions++;
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
	mb_session key = {.pipe_id = pipe_id};
	mb_session *s;

	pthread_mutex_lock(&b->lock);
	s = RB_FIND(mb_session_pipe_tree, &b->by_pipe, &key);
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
	mb_session key = {.pipe_id = pipe_id};
	mb_session *s;

	/* The session ends now; its connection is left to close by itself (when the last
	 * process holding the socket exits). Closing it from here raced nng 1.5.2's own close of
	 * a dead peer's pipe and could wedge nng's reaper. */
	pthread_mutex_lock(&b->lock);
	s = RB_FIND(mb_session_pipe_tree, &b->by_pipe, &key);
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
	mb_session key = {.id = session_id};
	mb_session *s = RB_FIND(mb_session_id_tree, &b->by_id, &key);

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
		mb_broker_credit_revoke(b, s);
		mb_broker_credit(b, s, s->credit); /* used without reservations: impossible */
		b->credit_total -= s->credit;
		s->credit = 0;
		s->reserve_count = 0; /* the new word holds none */
		s->reserve_bytes = 0;
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

uint64_t mb_broker_sum_sessions(mb_broker *b)
{
	uint64_t sum = 0;
	mb_session *s;

	pthread_mutex_lock(&b->lock);
	RB_FOREACH(s, mb_session_pipe_tree, &b->by_pipe)
		sum += mb_session_charged(s);
	pthread_mutex_unlock(&b->lock);
	return sum;
}

/* Lookup helpers for dispatch.c, which shares the trees through these wrappers. */
mb_session *mb_broker_find_pipe(mb_broker *b, uint32_t pipe_id)
{
	mb_session key = {.pipe_id = pipe_id};
	return RB_FIND(mb_session_pipe_tree, &b->by_pipe, &key);
}

void mb_broker_register_id(mb_broker *b, mb_session *s)
{
	s->id = b->next_session_id++;
	RB_INSERT(mb_session_id_tree, &b->by_id, s);
}

mb_session *mb_broker_first(mb_broker *b)
{
	return RB_MIN(mb_session_pipe_tree, &b->by_pipe);
}

mb_session *mb_broker_next(mb_session *s)
{
	return RB_NEXT(mb_session_pipe_tree, NULL, s);
}
