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
 */
#include <dlfcn.h>
#include <errno.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/uio.h>

typedef ssize_t (*sendmsg_fn)(int, const struct msghdr *, int);
typedef ssize_t (*readv_fn)(int, const struct iovec *, int);

static sendmsg_fn next_sendmsg;
static readv_fn next_readv;

/* Before main, so no thread races the lookup. */
__attribute__((constructor)) static void hangup_init(void)
{
	next_sendmsg = (sendmsg_fn)dlsym(RTLD_NEXT, "sendmsg");
	next_readv = (readv_fn)dlsym(RTLD_NEXT, "readv");
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
