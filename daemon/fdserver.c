/*
 * fdserver.c: section hand-over thread. A hand-over is one small datagram each way, sent by the
 * client right after it connects, so the thread serves many peers at once with a short deadline
 * each: a peer that connects and says nothing holds a slot for at most the deadline, and when all
 * slots are taken the peer that has waited longest gives its slot up.
 */
#include "fdserver.h"

#include <endian.h>
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/stat.h>
#include <unistd.h>

#include "clock.h"
#include "log.h"
#include "mb_address.h"
#include "mb_fdpass.h"
#include "mb_wire.h"

#define PEER_DEADLINE_MS 500
#define MAX_PEERS	 256

typedef struct peer {
	int fd;		      /* -1: free slot */
	uint64_t deadline_ms; /* CLOCK_MONOTONIC */
} peer;

struct mb_fdserver {
	mb_broker *broker;
	int listen_fd;
	int stop_fd; /* eventfd: wakes the thread for shutdown */
	int epfd;
	pthread_t thread;
	char path[sizeof(((struct sockaddr_un *)0)->sun_path)]; /* empty for abstract sockets */
	peer peers[MAX_PEERS];
};

/* epoll data of the listening socket and the stop event; peers are their slot index. */
#define TAG_LISTEN ((uint64_t)MAX_PEERS)
#define TAG_STOP   ((uint64_t)MAX_PEERS + 1)

/* Answers the request waiting on conn (it is readable). */
static void serve_one(mb_fdserver *f, int conn)
{
	static mb_log_limit refusals = MB_LOG_LIMIT_INIT;
	uint8_t buf[8 + MB_WIRE_TOKEN_LEN + 2];
	struct ucred cred;
	socklen_t clen = sizeof(cred);
	uint64_t id;
	uint8_t status = 1;
	ssize_t n;
	int fd = -1, passed = -1;

	n = mb_fdpass_recv(conn, buf, sizeof(buf), &passed);
	if (n != 8 + MB_WIRE_TOKEN_LEN + 1 ||
	    getsockopt(conn, SOL_SOCKET, SO_PEERCRED, &cred, &clen) != 0)
		goto reply;
	memcpy(&id, buf, 8);
	id = le64toh(id);
	if (buf[8 + MB_WIRE_TOKEN_LEN] == MB_FD_GET && passed < 0) {
		fd = mb_broker_handover(f->broker, id, buf + 8, MB_WIRE_TOKEN_LEN, cred.uid,
					cred.pid);
		if (fd >= 0)
			status = 0;
	} else if (buf[8 + MB_WIRE_TOKEN_LEN] == MB_FD_ADOPT && passed >= 0) {
		if (mb_broker_adopt_section(f->broker, id, buf + 8, MB_WIRE_TOKEN_LEN, cred.uid,
					    cred.pid, passed) == 0) {
			passed = -1; /* the broker owns it now */
			status = 0;
		}
	}
	if (status != 0)
		mb_log_limited(&refusals, LOG_NOTICE,
			       "section hand-over refused to pid %d uid %u (session %llu)",
			       (int)cred.pid, (unsigned)cred.uid, (unsigned long long)id);
reply:
	if (passed >= 0)
		close(passed);
	(void)mb_fdpass_send(conn, &status, 1, fd);
	if (fd >= 0)
		close(fd);
}

static void drop_peer(mb_fdserver *f, int slot)
{
	close(f->peers[slot].fd); /* also takes it out of the epoll set */
	f->peers[slot].fd = -1;
}

/* Accepts every pending connection into a slot (the longest-waiting peer makes room). */
static void accept_all(mb_fdserver *f)
{
	for (;;) {
		int conn = accept4(f->listen_fd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
		int slot = -1, oldest = 0;

		if (conn < 0) {
			if (errno == EMFILE || errno == ENFILE)
				usleep(10000); /* let descriptors come back */
			return;
		}
		for (int i = 0; i < MAX_PEERS && slot < 0; i++) {
			if (f->peers[i].fd < 0)
				slot = i;
			else if (f->peers[i].deadline_ms < f->peers[oldest].deadline_ms)
				oldest = i;
		}
		if (slot < 0) {
			drop_peer(f, oldest);
			slot = oldest;
		}
		struct epoll_event ev = {.events = EPOLLIN, .data.u64 = (uint64_t)slot};
		if (epoll_ctl(f->epfd, EPOLL_CTL_ADD, conn, &ev) != 0) {
			close(conn);
			continue;
		}
		f->peers[slot].fd = conn;
		f->peers[slot].deadline_ms = mb_now_ms() + PEER_DEADLINE_MS;
	}
}

/* Drops peers past their deadline; returns the milliseconds until the next deadline, or -1. */
static int expire(mb_fdserver *f)
{
	uint64_t now = mb_now_ms(), next = 0;

	for (int i = 0; i < MAX_PEERS; i++) {
		if (f->peers[i].fd < 0)
			continue;
		if (f->peers[i].deadline_ms <= now)
			drop_peer(f, i);
		else if (next == 0 || f->peers[i].deadline_ms < next)
			next = f->peers[i].deadline_ms;
	}
	return next == 0 ? -1 : (int)(next - now);
}

static void *run(void *arg)
{
	mb_fdserver *f = arg;
	struct epoll_event evs[32];

	for (;;) {
		int n = epoll_wait(f->epfd, evs, 32, expire(f));
		if (n < 0) {
			if (errno == EINTR)
				continue;
			mb_log(LOG_ERR, "fd socket epoll failed: %s", strerror(errno));
			return NULL;
		}
		for (int i = 0; i < n; i++) {
			uint64_t tag = evs[i].data.u64;
			if (tag == TAG_STOP)
				return NULL;
			if (tag == TAG_LISTEN) {
				accept_all(f);
			} else if (tag < MAX_PEERS && f->peers[tag].fd >= 0) {
				serve_one(f, f->peers[tag].fd);
				drop_peer(f, (int)tag);
			}
		}
	}
}

int mb_fdserver_start(mb_broker *b, const char *url, int mode, gid_t gid, mb_fdserver **out)
{
	mb_fdserver *f = calloc(1, sizeof(*f));
	struct sockaddr_un sun;
	socklen_t len;
	int rv;

	if (f == NULL)
		return -ENOMEM;
	f->broker = b;
	f->listen_fd = -1;
	f->stop_fd = -1;
	f->epfd = -1;
	for (int i = 0; i < MAX_PEERS; i++)
		f->peers[i].fd = -1;
	if (mb_address_fd_socket(url, &sun, &len) != 0) {
		free(f);
		return -EINVAL;
	}
	if (sun.sun_path[0] != '\0') {
		memcpy(f->path, sun.sun_path, sizeof(f->path));
		/* We own the RPC address (nng_listen succeeded), so a file here is stale. */
		unlink(f->path);
	}
	f->listen_fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	f->stop_fd = eventfd(0, EFD_CLOEXEC);
	f->epfd = epoll_create1(EPOLL_CLOEXEC);
	if (f->listen_fd < 0 || f->stop_fd < 0 || f->epfd < 0 ||
	    bind(f->listen_fd, (struct sockaddr *)&sun, len) != 0 ||
	    (f->path[0] != '\0' && chmod(f->path, (mode_t)mode) != 0) ||
	    (f->path[0] != '\0' && gid != (gid_t)-1 && chown(f->path, (uid_t)-1, gid) != 0) ||
	    listen(f->listen_fd, 128) != 0) {
		rv = -errno;
		goto fail;
	}
	struct epoll_event lev = {.events = EPOLLIN, .data.u64 = TAG_LISTEN};
	struct epoll_event sev = {.events = EPOLLIN, .data.u64 = TAG_STOP};
	if (epoll_ctl(f->epfd, EPOLL_CTL_ADD, f->listen_fd, &lev) != 0 ||
	    epoll_ctl(f->epfd, EPOLL_CTL_ADD, f->stop_fd, &sev) != 0) {
		rv = -errno;
		goto fail;
	}
	if ((rv = pthread_create(&f->thread, NULL, run, f)) != 0) {
		rv = -rv;
		goto fail;
	}
	*out = f;
	return 0;
fail:
	if (f->listen_fd >= 0)
		close(f->listen_fd);
	if (f->stop_fd >= 0)
		close(f->stop_fd);
	if (f->epfd >= 0)
		close(f->epfd);
	free(f);
	return rv;
}

void mb_fdserver_stop(mb_fdserver *f)
{
	uint64_t one = 1;

	if (f == NULL)
		return;
	if (write(f->stop_fd, &one, sizeof(one)) != sizeof(one))
		mb_log(LOG_WARNING, "cannot wake the fd socket thread");
	pthread_join(f->thread, NULL);
	for (int i = 0; i < MAX_PEERS; i++)
		if (f->peers[i].fd >= 0)
			close(f->peers[i].fd);
	close(f->listen_fd);
	close(f->stop_fd);
	close(f->epfd);
	if (f->path[0] != '\0')
		unlink(f->path);
	free(f);
}
