/*
 * hangup.c: a peer's hang-up, as nng 1.5.2 must see it to keep accepting.
 *
 * nng 1.5.2 negotiates every new IPC connection by sending its 8-byte SP header first. When the
 * peer has already gone (anyone who connects and closes, or a client killed at the wrong moment),
 * that sendmsg() fails with EPIPE, which nng turns into NNG_ECLOSED and hands to the listener's
 * pending accept. The listener takes NNG_ECLOSED for its own close and never accepts again: every
 * later connection is accepted by the transport, negotiated, and then waits forever (nng #1518;
 * fixed after 1.5.2 by passing NNG_ECONNSHUT up instead). End-of-file during the handshake gives
 * NNG_ECONNSHUT, which 1.5.2's listener survives only after a 100 ms pause.
 *
 * The broker's executable defines sendmsg() and readv(), so libnng's calls (through its PLT)
 * reach these first: EPIPE, and end-of-file on a socket, are reported as ECONNRESET, which the
 * listener treats as a remote condition and keeps accepting at once. For every other caller in
 * the broker (the fd hand-over, sd_notify, the journal) the two mean the same thing: the peer is
 * gone. Both defer to the next definition (libc, or the sanitizer's interceptor) for the work.
 *
 * accept() is the third: nng frees a connection that failed its handshake on its single reaper
 * thread, which a process connecting and closing in a loop (~15,000 a second here) outruns until
 * the broker has no descriptors left (20,000 open within 2 s, and every honest connect and every
 * new section failing with EMFILE). So before nng sees a new connection, it is dropped at once
 * when its peer already hung up, or when its process connects faster than MB_ACCEPT_RATE a second
 * (a token bucket per pid; the broker's own probe is exempt). A dropped peer sees its connection
 * reset; an honest client connects a few times in its life.
 */
#include <dlfcn.h>
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdbool.h>
#include <unistd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/uio.h>

#include "clock.h"
#include "log.h"

typedef ssize_t (*sendmsg_fn)(int, const struct msghdr *, int);
typedef ssize_t (*readv_fn)(int, const struct iovec *, int);
typedef int (*accept_fn)(int, struct sockaddr *, socklen_t *);

static sendmsg_fn next_sendmsg;
static readv_fn next_readv;
static accept_fn next_accept;

/* Before main, so no thread races the lookup. */
__attribute__((constructor)) static void hangup_init(void)
{
	next_sendmsg = (sendmsg_fn)dlsym(RTLD_NEXT, "sendmsg");
	next_readv = (readv_fn)dlsym(RTLD_NEXT, "readv");
	next_accept = (accept_fn)dlsym(RTLD_NEXT, "accept");
}

ssize_t sendmsg(int fd, const struct msghdr *msg, int flags)
{
	ssize_t n = next_sendmsg(fd, msg, flags);

	if (n < 0 && errno == EPIPE)
		errno = ECONNRESET;
	return n;
}

ssize_t readv(int fd, const struct iovec *iov, int iovcnt)
{
	ssize_t n = next_readv(fd, iov, iovcnt);
	struct stat st;
	size_t want = 0;

	if (n != 0)
		return n;
	for (int i = 0; i < iovcnt; i++)
		want += iov[i].iov_len;
	/* End-of-file of a socket only; a file read at its end keeps its 0. */
	if (want > 0 && fstat(fd, &st) == 0 && S_ISSOCK(st.st_mode)) {
		errno = ECONNRESET;
		return -1;
	}
	return n;
}

/* Connections one process may open a second, sustained; as many at once. */
#define MB_ACCEPT_RATE 200
#define ACCEPT_PIDS    128

static struct {
	pid_t pid;
	double tokens;
	uint64_t last_ms;
} buckets[ACCEPT_PIDS];
static pthread_mutex_t buckets_lock = PTHREAD_MUTEX_INITIALIZER;
static mb_log_limit floods = MB_LOG_LIMIT_INIT;

/* Whether pid may open one more connection now (its bucket has a token). */
static bool take_token(pid_t pid)
{
	uint64_t now = mb_now_ms();
	int slot = -1, oldest = 0;
	bool ok;

	pthread_mutex_lock(&buckets_lock);
	for (int i = 0; i < ACCEPT_PIDS && slot < 0; i++) {
		if (buckets[i].pid == pid)
			slot = i;
		else if (buckets[i].last_ms < buckets[oldest].last_ms)
			oldest = i;
	}
	if (slot < 0) {
		/* A new pid takes the least recently seen bucket, full. */
		slot = oldest;
		buckets[slot].pid = pid;
		buckets[slot].tokens = MB_ACCEPT_RATE;
		buckets[slot].last_ms = now;
	}
	buckets[slot].tokens += (double)(now - buckets[slot].last_ms) * MB_ACCEPT_RATE / 1000.0;
	if (buckets[slot].tokens > MB_ACCEPT_RATE)
		buckets[slot].tokens = MB_ACCEPT_RATE;
	buckets[slot].last_ms = now;
	ok = buckets[slot].tokens >= 1.0;
	if (ok)
		buckets[slot].tokens -= 1.0;
	pthread_mutex_unlock(&buckets_lock);
	return ok;
}

/* Whether nng should see connection c at all. */
static bool admit(int c)
{
	struct pollfd p = {.fd = c, .events = POLLRDHUP};
	struct ucred cred;
	socklen_t len = sizeof(cred);

	if (poll(&p, 1, 0) == 1 && (p.revents & (POLLRDHUP | POLLHUP | POLLERR)) != 0)
		return false; /* the peer is gone already */
	if (getsockopt(c, SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0 || cred.pid == getpid())
		return true;
	if (take_token(cred.pid))
		return true;
	mb_log_limited(&floods, LOG_WARNING,
		       "pid %d (uid %u) opens connections faster than %d a second; refused",
		       (int)cred.pid, (unsigned)cred.uid, MB_ACCEPT_RATE);
	return false;
}

int accept(int fd, struct sockaddr *addr, socklen_t *len)
{
	for (;;) {
		int c = next_accept(fd, addr, len);
		if (c < 0 || admit(c))
			return c;
		close(c);
	}
}
