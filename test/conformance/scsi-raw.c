/*
 * scsi-raw: send raw CDBs to an iSCSI LU through libiscsi (a peer initiator nobody here wrote), all in
 * ONE session, and print one JSON line per command. Used by test/e2e/conformance.test.ts for what
 * iscsi-test-cu 1.19 does not cover (READ FULL STATUS contents, REGISTER AND MOVE, reservations across
 * restarts, REPORT TARGET PORT GROUPS).
 *
 *   scsi-raw ISCSI-URL INITIATOR-NAME [--second ISCSI-URL INITIATOR-NAME] CMD...
 *   CMD = [2@]CDBHEX:ALLOC          command with Data-In of at most ALLOC bytes (0 = no data)
 *       | [2@]CDBHEX:ALLOC:OUTHEX   command with Data-Out OUTHEX
 *   "2@" sends the command on the second session (both sessions stay logged in for the whole run).
 *
 * A UNIT ATTENTION answer is reported and the command retried (up to 8 times); the line printed is the
 * final answer: {"status":N,"sense":"hex","data":"hex","uas":["2a04",...]}.
 *
 * Build: gcc -O1 -o scsi-raw scsi-raw.c -liscsi   (Debian: libiscsi-dev)
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <stdint.h>
#include <iscsi/iscsi.h>
#include <iscsi/scsi-lowlevel.h>

static int hexval(char c)
{
	if (c >= '0' && c <= '9') return c - '0';
	if (c >= 'a' && c <= 'f') return c - 'a' + 10;
	if (c >= 'A' && c <= 'F') return c - 'A' + 10;
	return -1;
}

static int unhex(const char *s, size_t n, unsigned char *out, size_t cap)
{
	size_t i;
	if (n % 2 || n / 2 > cap) return -1;
	for (i = 0; i < n / 2; i++) {
		int h = hexval(s[2 * i]), l = hexval(s[2 * i + 1]);
		if (h < 0 || l < 0) return -1;
		out[i] = (unsigned char)(h << 4 | l);
	}
	return (int)(n / 2);
}

static void puthex(const unsigned char *p, size_t n)
{
	size_t i;
	for (i = 0; i < n; i++) printf("%02x", p[i]);
}

static struct iscsi_context *login(const char *u, const char *initiator, struct iscsi_url **url)
{
	struct iscsi_context *iscsi = iscsi_create_context(initiator);
	if (iscsi == NULL) { fprintf(stderr, "cannot create context\n"); return NULL; }
	*url = iscsi_parse_full_url(iscsi, u);
	if (*url == NULL) { fprintf(stderr, "bad url: %s\n", iscsi_get_error(iscsi)); return NULL; }
	iscsi_set_targetname(iscsi, (*url)->target);
	iscsi_set_session_type(iscsi, ISCSI_SESSION_NORMAL);
	iscsi_set_header_digest(iscsi, ISCSI_HEADER_DIGEST_NONE_CRC32C);
	if (iscsi_full_connect_sync(iscsi, (*url)->portal, (*url)->lun) != 0) {
		fprintf(stderr, "login failed: %s\n", iscsi_get_error(iscsi));
		return NULL;
	}
	return iscsi;
}

int main(int argc, char **argv)
{
	struct iscsi_context *sessions[2] = { NULL, NULL };
	struct iscsi_url *urls[2] = { NULL, NULL };
	int a, first = 3, rc = 0, i;

	if (argc < 3) {
		fprintf(stderr, "usage: %s ISCSI-URL INITIATOR-NAME [--second ISCSI-URL INITIATOR-NAME] [2@]CDBHEX:ALLOC[:OUTHEX]...\n", argv[0]);
		return 2;
	}
	sessions[0] = login(argv[1], argv[2], &urls[0]);
	if (sessions[0] == NULL) return 1;
	if (argc >= 6 && strcmp(argv[3], "--second") == 0) {
		sessions[1] = login(argv[4], argv[5], &urls[1]);
		if (sessions[1] == NULL) return 1;
		first = 6;
	}

	for (a = first; a < argc; a++) {
		unsigned char cdb[32], *out = NULL;
		char *arg = argv[a], *c1, *c2;
		int cdblen, outlen = 0, tries, which = 0;
		struct iscsi_context *iscsi;
		struct iscsi_url *url;
		long alloc;
		char uas[256] = "";

		if (strncmp(arg, "2@", 2) == 0) {
			which = 1;
			arg += 2;
		}
		iscsi = sessions[which];
		url = urls[which];
		c1 = strchr(arg, ':');
		if (iscsi == NULL || c1 == NULL) { fprintf(stderr, "bad command %s\n", argv[a]); rc = 2; break; }
		cdblen = unhex(arg, (size_t)(c1 - arg), cdb, sizeof cdb);
		alloc = strtol(c1 + 1, &c2, 10);
		if (cdblen <= 0 || alloc < 0) { fprintf(stderr, "bad command %s\n", arg); rc = 2; break; }
		if (*c2 == ':') {
			size_t n = strlen(c2 + 1);
			out = malloc(n / 2 + 1);
			outlen = unhex(c2 + 1, n, out, n / 2 + 1);
			if (outlen < 0) { fprintf(stderr, "bad data %s\n", arg); rc = 2; free(out); break; }
		}
		for (tries = 0; tries < 8; tries++) {
			struct scsi_task *task;
			struct iscsi_data d;
			int dir = outlen > 0 ? SCSI_XFER_WRITE : alloc > 0 ? SCSI_XFER_READ : SCSI_XFER_NONE;

			task = scsi_create_task(cdblen, cdb, dir, outlen > 0 ? outlen : (int)alloc);
			if (task == NULL) { fprintf(stderr, "out of memory\n"); return 1; }
			d.data = out;
			d.size = (size_t)outlen;
			if (iscsi_scsi_command_sync(iscsi, url->lun, task, outlen > 0 ? &d : NULL) == NULL) {
				printf("{\"error\":\"%s\"}\n", "transport error");
				fflush(stdout);
				scsi_free_scsi_task(task);
				rc = 1;
				break;
			}
			if (task->status == SCSI_STATUS_CHECK_CONDITION && task->sense.key == SCSI_SENSE_UNIT_ATTENTION &&
			    tries < 7) {
				size_t l = strlen(uas);
				if (l + 8 < sizeof uas)
					snprintf(uas + l, sizeof uas - l, "%s\"%04x\"", l ? "," : "", task->sense.ascq);
				scsi_free_scsi_task(task);
				continue;
			}
			printf("{\"status\":%d,\"sense\":\"", task->status);
			if (task->status == SCSI_STATUS_CHECK_CONDITION)
				printf("%02x%04x", task->sense.key, task->sense.ascq);
			printf("\",\"data\":\"");
			if (task->status == SCSI_STATUS_GOOD && task->datain.data != NULL) puthex(task->datain.data, (size_t)task->datain.size);
			printf("\",\"uas\":[%s]}\n", uas);
			fflush(stdout);
			scsi_free_scsi_task(task);
			break;
		}
		free(out);
		if (rc) break;
	}
	for (i = 0; i < 2; i++) {
		if (sessions[i] == NULL) continue;
		iscsi_logout_sync(sessions[i]);
		iscsi_destroy_url(urls[i]);
		iscsi_destroy_context(sessions[i]);
	}
	return rc;
}
