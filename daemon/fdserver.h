/*
 * fdserver.h: the companion AF_UNIX SOCK_SEQPACKET socket that hands sections to clients.
 *
 * nng 1.5.2 cannot pass descriptors, so after Hello a client connects here, presents its session id
 * and one-time token, and receives its section's memfd with SCM_RIGHTS. The peer's uid and pid
 * (SO_PEERCRED) must match the session's, and each token works once.
 *
 * Wire format: request = 8-byte session id (little endian) + MB_WIRE_TOKEN_LEN token bytes +
 * 1 mode byte (MB_FD_GET: send me my section; MB_FD_ADOPT: adopt the memfd attached, which the
 * client mapped under a previous broker); reply = 1 status byte (0 = done, with the memfd
 * attached for MB_FD_GET; 1 = refused). Descriptors are accepted only with MB_FD_ADOPT, one at
 * most, and only after validation; any other is closed unread.
 */
#ifndef MB_FDSERVER_H
#define MB_FDSERVER_H

#include "broker.h"

#include <sys/socket.h>
#include <sys/un.h>

#define MB_FD_GET   0
#define MB_FD_ADOPT 1

typedef struct mb_fdserver mb_fdserver;

/* Binds the socket for the RPC url (mb_address_fd_socket) with the RPC socket's mode and group
 * and starts its thread. A stale socket file is replaced (the caller already owns the RPC
 * address). 0 or -errno. */
int mb_fdserver_start(mb_broker *b, const char *url, int mode, gid_t gid, mb_fdserver **out);

/* Stops the thread, closes and unlinks the socket. */
void mb_fdserver_stop(mb_fdserver *f);

#endif
