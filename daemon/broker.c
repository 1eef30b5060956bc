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
#include <sys/random.h>
#include <sys/syscall.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "arbiter.h"
#include "audit.h"
#include "clock.h"
#include "credit.h"
#include "fdstore.h"
#include "log.h"
#include "mb_credit.h"
#include "mb_win32.h"
#include "memfd.h"
#include "readopt.h"
#include "snapshot.h"

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

/* Frees s; punch: its pages first (not at shutdown, nor for a memfd its client hands back). */
static void end_section(mb_broker *b, mb_section *s, const char *why, bool punch)
{
	mb_log(LOG_DEBUG, "section %llu (pid %d uid %u, %s) freed: %s, %llu bytes returned",
	       (unsigned long long)s->id, (int)s->pid, (unsigned)s->uid,
	       mb_section_state_name(s->state), why, (unsigned long long)mb_section_charged(s));
	if (s->conn != NULL) {
		mb_arbiter_drop_conn(b, s->conn->pipe_id, false);
		s->conn->section = NULL;
		s->conn = NULL;
	}
	mb_arbiter_drop_section(b, s);
	mb_registry_remove_section(&b->reg, s);
	mb_books_leave(&b->books, s);
	/* A broker that stops leaves its sections in the store for the next one. */
	if (!b->stopping)
		mb_fdstore_forget_section(b->fdstore, s);
	mb_section_free(s, punch);
	if (!b->stopping)
		mb_arbiter_grant_waiters(b);
}

void mb_broker_end_section(mb_broker *b, mb_section *s, const char *why)
{
	/* At shutdown clients keep their memory: it stays mapped and readable in them. */
	end_section(b, s, why, !b->stopping);
}

static void free_conn(mb_conn *c)
{
	if (c->pidfd >= 0)
		close(c->pidfd);
	free(c);
}

void mb_broker_fini(mb_broker *b)
{
	mb_section *s;
	mb_conn *c;

	pthread_mutex_lock(&b->lock);
	b->stopping = true;
	while ((s = mb_registry_first(&b->reg)) != NULL)
		mb_broker_end_section(b, s, "the broker stops");
	while ((c = mb_registry_first_conn(&b->reg)) != NULL) {
		mb_registry_remove_conn(&b->reg, c);
		free_conn(c);
	}
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
	pthread_mutex_unlock(&b->lock);
	pthread_mutex_destroy(&b->lock);
	if (b->death_epfd >= 0)
		close(b->death_epfd);
}

static uint32_t uid_limit(const mb_broker *b)
{
	return b->conf.sessions_per_uid ? b->conf.sessions_per_uid : MB_DEFAULT_SESSIONS_PER_UID;
}

int mb_broker_connect(mb_broker *b, uint32_t pipe_id, pid_t pid, uid_t uid, gid_t gid)
{
	mb_conn *c = calloc(1, sizeof(*c));
	int rv = 0;

	if (c == NULL)
		return -ENOMEM;
	c->pipe_id = pipe_id;
	c->pid = pid;
	c->uid = uid;
	c->gid = gid;
	/* A small race remains: the pid could be reused between connect and here (SO_PEERPIDFD
	 * would close it, but needs Linux 6.5). */
	c->pidfd = (int)syscall(SYS_pidfd_open, pid, 0);
	pthread_mutex_lock(&b->lock);
	uint32_t same = uid != 0 ? mb_registry_conns_of(&b->reg, uid) : 0;
	if (mb_registry_take_gone(&b->reg, pipe_id)) {
		rv = -ENOTCONN; /* its end came first: nothing to add, nothing to close */
	} else if (uid != 0 && same >= uid_limit(b)) {
		mb_log(LOG_WARNING,
		       "uid %u already holds %u connections (the limit); refusing pid %d",
		       (unsigned)uid, same, (int)pid);
		rv = -EMFILE;
	} else if (mb_registry_add_conn(&b->reg, c) != 0) {
		rv = -EEXIST;
	}
	pthread_mutex_unlock(&b->lock);
	if (rv != 0)
		free_conn(c);
	return rv;
}

int mb_broker_open_section(mb_broker *b, mb_conn *c, const char *name, mb_section **out)
{
	char memfd_name[64];
	mb_section *s;
	int fd;

	if (c->uid != 0 && mb_registry_sections_of(&b->reg, c->uid) >= uid_limit(b)) {
		mb_log(LOG_WARNING, "uid %u already holds %u sections (the limit); refusing pid %d",
		       (unsigned)c->uid, uid_limit(b), (int)c->pid);
		return -EMFILE;
	}
	s = mb_section_new(c->pid, c->uid, c->gid);
	if (s == NULL)
		return -ENOMEM;
	if (getrandom(s->token, sizeof(s->token), 0) != (ssize_t)sizeof(s->token) ||
	    getrandom(s->attach_token, sizeof(s->attach_token), 0) !=
		(ssize_t)sizeof(s->attach_token)) {
		mb_section_free(s, true);
		return -EIO;
	}
	snprintf(memfd_name, sizeof(memfd_name), "membroker-pid%d", (int)c->pid);
	fd = mb_memfd_create(memfd_name, b->section_size);
	if (fd < 0) {
		mb_section_free(s, true);
		return fd;
	}
	s->section_fd = fd;
	s->credit_word = mb_memfd_map_credit(fd, true);
	snprintf(s->name, sizeof(s->name), "%s", name);
	mb_registry_add_section(&b->reg, s);
	/* The owner's pidfd moves from the connection to the section: the death watch frees the
	 * section when the process exits, attached or not. */
	s->pidfd = c->pidfd;
	c->pidfd = -1;
	if (s->pidfd >= 0 && b->death_epfd >= 0) {
		struct epoll_event ev = {.events = EPOLLIN, .data.u64 = s->id};
		if (epoll_ctl(b->death_epfd, EPOLL_CTL_ADD, s->pidfd, &ev) != 0)
			mb_log(LOG_WARNING, "section %llu: the death watch cannot follow pid %d",
			       (unsigned long long)s->id, (int)s->pid);
	}
	s->state = MB_SECTION_ATTACHED;
	s->conn = c;
	c->section = s;
	mb_books_join_group(&b->books, s);
	/* Now, not at the stop: a crash keeps the section too. */
	mb_fdstore_keep_section(b->fdstore, s);
	*out = s;
	return 0;
}

bool mb_pidfd_exited(int pidfd)
{
	struct pollfd p = {.fd = pidfd, .events = POLLIN};
	return poll(&p, 1, 0) != 0;
}

void mb_broker_sweep_exited(mb_broker *b)
{
	mb_section *s, *next;

	mb_conn *c, *cnext;

	pthread_mutex_lock(&b->lock);
	for (s = mb_registry_first(&b->reg); s != NULL; s = next) {
		next = mb_registry_next(s);
		if (s->state != MB_SECTION_ATTACHED && (s->pidfd < 0 || mb_pidfd_exited(s->pidfd)))
			mb_broker_end_section(b, s, "its process exited while detached");
	}
	/* nng 1.5.2 does not always report the end of a connection whose peer hung up while it
	 * was being set up (or whose first message raced its ADD event); one whose process is gone
	 * and that holds no section is forgotten here, with its pidfd. */
	for (c = mb_registry_first_conn(&b->reg); c != NULL; c = cnext) {
		cnext = mb_registry_next_conn(c);
		if (c->section != NULL || c->pidfd < 0 || !mb_pidfd_exited(c->pidfd))
			continue;
		mb_arbiter_drop_conn(b, c->pipe_id, true);
		mb_registry_remove_conn(&b->reg, c);
		free_conn(c);
	}
	pthread_mutex_unlock(&b->lock);
}

/*
 * Nothing writes a dead process's pages any more, so before its section is ended under the lock
 * they are punched out on a duplicate of the descriptor with the lock released: 256 MiB of
 * written pages take about 44 ms to punch, which every other client's call would otherwise wait
 * behind. The section stays charged meanwhile (the books only overstate), and ending it then
 * finds holes. The credit page is left for the end, as the books may still read it. The section
 * is section_id, or the one attached to pipe_id when section_id is 0; nothing is done unless its
 * process has exited.
 */
static void punch_if_dead(mb_broker *b, uint64_t section_id, uint32_t pipe_id)
{
	mb_section *s;
	int fd = -1;

	pthread_mutex_lock(&b->lock);
	s = section_id != 0 ? mb_registry_section(&b->reg, section_id)
			    : mb_registry_by_pipe(&b->reg, pipe_id);
	if (s != NULL && !b->stopping && s->section_fd >= 0 && s->pidfd >= 0 &&
	    mb_pidfd_exited(s->pidfd) && mb_section_allocated(s) >= MB_PUNCH_FIRST_MIN)
		fd = fcntl(s->section_fd, F_DUPFD_CLOEXEC, 0);
	pthread_mutex_unlock(&b->lock);
	if (fd >= 0) {
		mb_memfd_discard(fd, MB_CREDIT_PAGE, MB_ADDRESS_LIMIT - MB_CREDIT_PAGE);
		close(fd);
	}
}

void mb_broker_disconnect(mb_broker *b, uint32_t pipe_id)
{
	mb_conn *c;

	punch_if_dead(b, 0, pipe_id);
	pthread_mutex_lock(&b->lock);
	c = mb_registry_conn(&b->reg, pipe_id);
	if (c != NULL) {
		mb_section *s = c->section;
		mb_arbiter_drop_conn(b, pipe_id, true);
		mb_registry_remove_conn(&b->reg, c);
		if (s != NULL) {
			s->conn = NULL;
			/* An empty section (no reservation, no credit) is not worth keeping: a
			 * client that comes back without it hands its memfd back and registers
			 * nothing. So a process gains no stock of sections by dropping
			 * connections. */
			bool empty = s->map.count == 0 && s->credit == 0;
			if (!b->stopping && !empty && s->pidfd >= 0 && !mb_pidfd_exited(s->pidfd)) {
				/* The connection dropped while the process lives: the client
				 * re-attaches. Its memory stays whole, charged and audited. */
				s->state = MB_SECTION_DETACHED;
				mb_log(LOG_DEBUG, "section %llu (pid %d) detached",
				       (unsigned long long)s->id, (int)s->pid);
			} else {
				mb_broker_end_section(b, s, "its connection closed");
			}
		}
		free_conn(c);
	}
	/* Its ADD_POST may still be on its way (after a Hello that came first made the
	 * connection, or after nothing at all): it must not add the connection back. */
	mb_registry_pipe_gone(&b->reg, pipe_id);
	pthread_mutex_unlock(&b->lock);
}

void mb_broker_process_exited(mb_broker *b, uint64_t section_id)
{
	mb_section *s;

	punch_if_dead(b, section_id, 0);
	/* The section ends now; its connection is left to close by itself (when the last
	 * process holding the socket exits). Closing it from here raced nng 1.5.2's own close of
	 * a dead peer's pipe and could wedge nng's reaper. */
	pthread_mutex_lock(&b->lock);
	s = mb_registry_section(&b->reg, section_id);
	if (s != NULL)
		mb_broker_end_section(b, s, "its process exited");
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

/* The section a hand-over is for, if uid, pid and token match. Burns the token once uid and pid
 * match, whether the token does or not. */
static mb_section *claim_token(mb_broker *b, uint64_t session_id, const uint8_t *token,
			       size_t token_len, uid_t uid, pid_t pid)
{
	mb_section *s = mb_registry_section(&b->reg, session_id);

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

int mb_broker_attach(mb_broker *b, mb_conn *c, uint64_t id, const uint8_t *token, size_t len,
		     mb_section **out)
{
	static mb_log_limit refusals = MB_LOG_LIMIT_INIT;
	mb_section *s = mb_registry_section(&b->reg, id);
	uint8_t next[MB_WIRE_TOKEN_LEN];

	if (s == NULL || s->state == MB_SECTION_FREED || len != MB_WIRE_TOKEN_LEN ||
	    !token_equal(s->attach_token, token, MB_WIRE_TOKEN_LEN) || s->uid != c->uid ||
	    s->pid != c->pid || getrandom(next, sizeof(next), 0) != (ssize_t)sizeof(next)) {
		if (s != NULL && s->held > 0 && s->pid == c->pid && s->uid == c->uid)
			/* Expected: restored after a crash without books; its client hands the
			 * memfd back next. */
			mb_log(LOG_DEBUG, "section %llu: restored without books, re-attach refused",
			       (unsigned long long)id);
		else if (s != NULL)
			mb_log_limited(&refusals, LOG_NOTICE,
				       "pid %d uid %u: re-attach to section %llu refused (%s)",
				       (int)c->pid, (unsigned)c->uid, (unsigned long long)id,
				       s->pid != c->pid || s->uid != c->uid
					   ? "not its owner"
					   : "wrong or used token");
		return -EPERM;
	}
	memcpy(s->attach_token, next, sizeof(next));
	if (s->conn != NULL && s->conn != c) {
		/* Its owner, with the current token, moves it to a new connection: the old one
		 * (which the client gave up as lost) keeps nothing; its parked requests end. */
		mb_arbiter_drop_conn(b, s->conn->pipe_id, false);
		s->conn->section = NULL;
	}
	s->state = MB_SECTION_ATTACHED;
	s->conn = c;
	c->section = s;
	*out = s;
	return 0;
}

int mb_broker_handover(mb_broker *b, uint64_t session_id, const uint8_t *token, size_t token_len,
		       uid_t uid, pid_t pid)
{
	mb_section *s;
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

/* Ends the detached section of s's process whose memfd is st's, if any, keeping its pages. */
static void end_detached_copy(mb_broker *b, const mb_section *s, const struct stat *st)
{
	for (mb_section *o = mb_registry_first(&b->reg); o != NULL; o = mb_registry_next(o)) {
		struct stat ost;
		/* Detached, or restored after a restart (with books the client no longer trusts,
		 * or without books after a crash). */
		if (o == s ||
		    (o->state != MB_SECTION_DETACHED && o->state != MB_SECTION_RESTORED) ||
		    o->pid != s->pid || o->uid != s->uid || fstat(o->section_fd, &ost) != 0 ||
		    ost.st_dev != st->st_dev || ost.st_ino != st->st_ino)
			continue;
		/* No punch: the client has the pages mapped and hands them back. */
		end_section(b, o, "its process handed its memfd back to a new section", false);
		return;
	}
}

int mb_broker_adopt_section(mb_broker *b, uint64_t session_id, const uint8_t *token,
			    size_t token_len, uid_t uid, pid_t pid, int fd)
{
	struct stat st;
	mb_section *s;
	int rv = -EPERM;

	if (mb_memfd_check_section(fd, b->section_size) != 0 || fstat(fd, &st) != 0)
		return -EINVAL;
	pthread_mutex_lock(&b->lock);
	/* A stopping broker's books are in its snapshot already. */
	s = b->frozen ? NULL : claim_token(b, session_id, token, token_len, uid, pid);
	if (s != NULL && s->map.count == 0) {
		/* A section this broker kept detached for the same process, handed back instead of
		 * re-attached (the client's books and ours may differ): it is ended without a
		 * punch, and the pages are booked again below, through the usual checks. */
		end_detached_copy(b, s, &st);
		/* Credit granted on the section being replaced is void; the adopted one's word is
		 * reset (a previous broker's grant means nothing here). */
		mb_credit_void(&b->books, s);
		mb_memfd_unmap_credit(s->credit_word);
		mb_fdstore_forget_section(b->fdstore, s);
		close(s->section_fd);
		s->section_fd = fd;
		s->credit_word = mb_memfd_map_credit(fd, true);
		mb_fdstore_keep_section(b->fdstore, s);
		mb_log(LOG_INFO,
		       "client pid %d handed its section back (session %llu): it reconnected and "
		       "re-registers what it holds",
		       (int)s->pid, (unsigned long long)s->id);
		s->adopted = true;
		s->adopting = true;
		s->adopt_deadline_ms = mb_now_ms() + MB_ADOPT_DEADLINE_MS;
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
	b->throttle.first_ms = conf->offender_refusal_ms;
	mb_books_clear_groups(&b->books);
	for (mb_section *s = mb_registry_first(&b->reg); s != NULL; s = mb_registry_next(s))
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

int mb_broker_freeze(mb_broker *b, uint64_t configured_budget, uint8_t **snapshot, size_t *len,
		     uint32_t *abandoned)
{
	int rv;

	pthread_mutex_lock(&b->lock);
	*abandoned = mb_arbiter_abandon_all(b);
	b->frozen = true;
	rv = mb_snapshot_encode(b, configured_budget, snapshot, len);
	pthread_mutex_unlock(&b->lock);
	return rv;
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

/* Refuses future sections of s's process until it exits (repeated offences). Caller holds the
 * lock. */
static void ban(mb_broker *b, const mb_section *s)
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
static void throttle_uid(mb_broker *b, const mb_section *s)
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
	uint64_t discarded = 0, offenders[16];
	uint32_t to_close[16];
	int noff, nclose = 0;
	void (*close_pipe)(void *, uint32_t);
	void *close_arg;

	pthread_mutex_lock(&b->lock);
	noff =
	    mb_audit_all(b, offenders, (int)(sizeof(offenders) / sizeof(offenders[0])), &discarded);
	/* Claims whose client did not finish re-registering in time are booked, and the section
	 * audited once, forgiving (after the pass above, which leaves re-registering sections
	 * alone). */
	mb_readopt_expire(b, mb_now_ms());
	mb_audit_books(b);
	for (int i = 0; i < noff; i++) {
		mb_section *s = mb_registry_section(&b->reg, offenders[i]);
		mb_log(LOG_WARNING, "ending the section of client pid %d after repeated offences",
		       (int)s->pid);
		ban(b, s);
		throttle_uid(b, s);
		/* Ended, not detached: the memory goes back now, and the process may not come
		 * back for it. */
		if (s->conn != NULL)
			to_close[nclose++] = s->conn->pipe_id;
		mb_broker_end_section(b, s, "repeated offences");
	}
	mb_arbiter_grant_waiters(b);
	close_pipe = b->close_pipe;
	close_arg = b->close_pipe_arg;
	pthread_mutex_unlock(&b->lock);
	/* Outside the lock: nng's pipe callbacks take it (see mb_broker_process_exited). More
	 * offenders than fit here are ended at the next audit. */
	for (int i = 0; i < nclose && close_pipe != NULL; i++)
		close_pipe(close_arg, to_close[i]);
	return discarded;
}

uint64_t mb_broker_sum_sessions(mb_broker *b)
{
	uint64_t sum = 0;

	pthread_mutex_lock(&b->lock);
	for (mb_section *s = mb_registry_first(&b->reg); s != NULL; s = mb_registry_next(s))
		sum += mb_section_charged(s);
	pthread_mutex_unlock(&b->lock);
	return sum;
}

void mb_broker_usage(mb_broker *b, uint32_t *clients, uint64_t *in_use, uint64_t *budget,
		     uint32_t *waiting)
{
	pthread_mutex_lock(&b->lock);
	*clients = b->reg.sections;
	*in_use = mb_memory_in_use(&b->books, &b->reg);
	*budget = b->books.ledger.budget;
	*waiting = b->nwaiters;
	pthread_mutex_unlock(&b->lock);
}
