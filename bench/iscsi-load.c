/*
 * iscsi-load: a small fixed-queue-depth load generator over libiscsi.
 *
 * Why hand-written: Debian 12's fio has no libiscsi engine, iscsi-perf only
 * reads, and `qemu-img bench` has no random offsets. This tool issues READ16
 * or WRITE16 at a fixed queue depth per session with libiscsi's async API, on
 * one or many sessions (each its own I_T nexus: its own ISID), for a fixed
 * duration or a fixed number of commands, and prints one JSON line with the
 * result, so that bench/iscsi.ts can drive Lunar and tgt with exactly the
 * same initiator.
 *
 * Usage:
 *   iscsi-load URL[,URL...] read|write rand|seq BLOCK_BYTES QD SECONDS|ios=N [SESSIONS_PER_URL]
 *   iscsi-load URL fill BLOCK_BYTES QD        (write every byte once with a known pattern, then exit)
 *   iscsi-load URL verify COUNT               (read COUNT random 4 KiB blocks, compare to the fill pattern)
 *   iscsi-load URL probe                      (login, READ CAPACITY, logout)
 * URL is iscsi://HOST:PORT/IQN/LUN. Set LIBISCSI_DEBUG=10 to log the login.
 * With several URLs and/or SESSIONS_PER_URL > 1 every session runs QD commands
 * at once; ios=N stops after N commands in total (for instruction counting).
 *
 * Output (stdout, one line):
 *   {"ios":N,"seconds":S,"iops":X,"MBps":Y,"lat_us":{"mean":..,"p50":..,"p99":..,"p999":..,"max":..},
 *    "blocks":B,"block_size":BS,"sessions":K,"session_iops":{"min":..,"max":..}}
 * verify prints {"checked":N,"mismatches":M}.
 * Exit 0 on success, 1 on usage error, 2 on connection/SCSI error, 3 on a data mismatch.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <inttypes.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <iscsi/iscsi.h>
#include <iscsi/scsi-lowlevel.h>

#define INITIATOR "iqn.2026-11.io.lunar:bench-initiator"
#define HIST_US 1000000 /* latency histogram: 1 us buckets up to 1 s (last bucket: >= 1 s) */
#define MAX_SESSIONS 1024

enum mode { MODE_READ, MODE_WRITE, MODE_FILL, MODE_VERIFY, MODE_PROBE };

struct job;

/* One session (I_T nexus) and its queue. */
struct sess {
	struct job *job;
	struct iscsi_context *iscsi;
	int lun;
	uint32_t block_size;  /* logical block size of the LU */
	uint64_t num_blocks;  /* LU capacity in logical blocks */
	uint32_t io_blocks;   /* logical blocks per command */
	uint64_t slots_total; /* number of io_bytes-sized slots in the LU */
	uint64_t next_seq;    /* next sequential slot */
	uint64_t rng;         /* xorshift64 state */
	int in_flight;
	uint64_t completed;
};

struct slot {
	struct sess *sess;
	unsigned char *buf;
	struct scsi_iovec iov;
	uint64_t issued_ns;
	uint64_t lba;
};

struct job {
	enum mode mode;
	int random;
	uint32_t io_bytes;     /* bytes per command */
	uint64_t fill_total;   /* fill: slots to write; verify: reads to check */
	uint64_t fill_next;
	uint64_t max_ios;      /* ios=N: commands to issue in total (0: by time) */
	uint64_t issued;
	int stop;              /* no new commands once set */
	int failed;
	uint64_t completed;
	uint64_t lat_sum_ns;
	uint64_t lat_max_ns;
	uint32_t *hist;
	uint64_t mismatches;
};

/* The fill pattern: every 8-byte word holds a function of its byte offset in the LU. */
static uint64_t pattern_word(uint64_t byte_offset)
{
	return (byte_offset * 0x9E3779B97F4A7C15ull) ^ 0x4C554E4152424E43ull; /* "LUNARBNC" */
}

static void pattern_fill(unsigned char *buf, uint64_t byte_offset, uint32_t len)
{
	for (uint32_t o = 0; o + 8 <= len; o += 8) {
		uint64_t w = pattern_word(byte_offset + o);
		memcpy(buf + o, &w, 8);
	}
}

static int pattern_check(const unsigned char *buf, uint64_t byte_offset, uint32_t len)
{
	for (uint32_t o = 0; o + 8 <= len; o += 8) {
		uint64_t w;
		memcpy(&w, buf + o, 8);
		if (w != pattern_word(byte_offset + o))
			return -1;
	}
	return 0;
}

static uint64_t now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static uint64_t xorshift64(uint64_t *s)
{
	uint64_t x = *s;
	x ^= x << 13;
	x ^= x >> 7;
	x ^= x << 17;
	return *s = x;
}

static int submit(struct sess *ss, struct slot *slot);

static void on_done(struct iscsi_context *iscsi, int status, void *command_data, void *private_data)
{
	struct slot *slot = private_data;
	struct sess *ss = slot->sess;
	struct job *job = ss->job;
	struct scsi_task *task = command_data;
	uint64_t lat = now_ns() - slot->issued_ns;

	(void)iscsi;
	ss->in_flight--;
	if (status != SCSI_STATUS_GOOD) {
		if (task != NULL && status == SCSI_STATUS_CHECK_CONDITION)
			fprintf(stderr, "iscsi-load: command failed: CHECK CONDITION %s (0x%x) %s (0x%04x)\n",
				scsi_sense_key_str(task->sense.key), task->sense.key,
				scsi_sense_ascq_str(task->sense.ascq), task->sense.ascq);
		else
			fprintf(stderr, "iscsi-load: command failed: status 0x%x: %s\n", status,
				iscsi_get_error(ss->iscsi));
		job->failed = 1;
		job->stop = 1;
	} else {
		if (job->mode == MODE_VERIFY &&
		    pattern_check(slot->buf, slot->lba * ss->block_size, job->io_bytes) != 0) {
			if (job->mismatches++ == 0)
				fprintf(stderr, "iscsi-load: data mismatch at LBA %" PRIu64 "\n", slot->lba);
		}
		job->completed++;
		ss->completed++;
		job->lat_sum_ns += lat;
		if (lat > job->lat_max_ns)
			job->lat_max_ns = lat;
		uint64_t us = lat / 1000;
		job->hist[us < HIST_US ? us : HIST_US - 1]++;
	}
	if (task != NULL)
		scsi_free_scsi_task(task);
	if (!job->stop && submit(ss, slot) != 0) {
		job->failed = 1;
		job->stop = 1;
	}
}

static int submit(struct sess *ss, struct slot *slot)
{
	struct job *job = ss->job;
	uint64_t index;
	struct scsi_task *task;

	if (job->max_ios && job->issued >= job->max_ios) {
		job->stop = 1;
		return 0;
	}
	if (job->mode == MODE_FILL || job->mode == MODE_VERIFY) {
		if (job->fill_next >= job->fill_total) {
			job->stop = 1;
			return 0;
		}
		index = job->mode == MODE_FILL ? job->fill_next : xorshift64(&ss->rng) % (ss->num_blocks / ss->io_blocks);
		job->fill_next++;
	} else if (job->random) {
		index = xorshift64(&ss->rng) % ss->slots_total;
	} else {
		index = ss->next_seq++ % ss->slots_total;
	}
	uint64_t lba = index * ss->io_blocks;
	slot->lba = lba;
	if (job->mode == MODE_FILL)
		pattern_fill(slot->buf, lba * ss->block_size, job->io_bytes);
	slot->iov.iov_base = slot->buf;
	slot->iov.iov_len = job->io_bytes;
	slot->issued_ns = now_ns();
	if (job->mode == MODE_READ || job->mode == MODE_VERIFY)
		task = iscsi_read16_iov_task(ss->iscsi, ss->lun, lba, job->io_bytes, (int)ss->block_size,
					     0, 0, 0, 0, 0, on_done, slot, &slot->iov, 1);
	else
		task = iscsi_write16_iov_task(ss->iscsi, ss->lun, lba, NULL, job->io_bytes,
					      (int)ss->block_size, 0, 0, 0, 0, 0, on_done, slot, &slot->iov, 1);
	if (task == NULL) {
		fprintf(stderr, "iscsi-load: cannot queue command: %s\n", iscsi_get_error(ss->iscsi));
		return -1;
	}
	ss->in_flight++;
	job->issued++;
	return 0;
}

static uint64_t percentile_us(const struct job *job, double p)
{
	uint64_t want = (uint64_t)((double)job->completed * p), seen = 0;
	for (uint64_t i = 0; i < HIST_US; i++) {
		seen += job->hist[i];
		if (seen > want)
			return i;
	}
	return HIST_US;
}

/* A new I_T nexus starts with UNIT ATTENTION (29/00 power on / reset): clear it. */
static int clear_unit_attention(struct iscsi_context *iscsi, int lun)
{
	for (int i = 0; i < 5; i++) {
		struct scsi_task *t = iscsi_testunitready_sync(iscsi, lun);
		if (t == NULL)
			return -1;
		int status = t->status;
		scsi_free_scsi_task(t);
		if (status == SCSI_STATUS_GOOD)
			return 0;
	}
	return -1;
}

static void usage(void)
{
	fprintf(stderr, "usage: iscsi-load URL[,URL...] read|write rand|seq BLOCK_BYTES QD SECONDS|ios=N [SESSIONS_PER_URL]\n"
			"       iscsi-load URL fill BLOCK_BYTES QD\n"
			"       iscsi-load URL verify COUNT\n"
			"       iscsi-load URL probe\n");
	exit(1);
}

/* Logs one session in (its own ISID), clears the power-on unit attention, reads the capacity. */
static int open_session(struct sess *ss, const char *url_text, unsigned index)
{
	ss->iscsi = iscsi_create_context(INITIATOR);
	if (ss->iscsi == NULL) {
		fprintf(stderr, "iscsi-load: cannot create context\n");
		return 2;
	}
	struct iscsi_url *url = iscsi_parse_full_url(ss->iscsi, url_text);
	if (url == NULL) {
		fprintf(stderr, "iscsi-load: bad URL %s: %s\n", url_text, iscsi_get_error(ss->iscsi));
		return 1;
	}
	/* Distinct ISIDs: every session is its own I_T nexus (RFC 7143 §4.2.7), like the paths of a multipath map. */
	iscsi_set_isid_random(ss->iscsi, ((uint32_t)getpid() << 10 ^ index) & 0xffffff, index & 0xffff);
	iscsi_set_targetname(ss->iscsi, url->target);
	iscsi_set_session_type(ss->iscsi, ISCSI_SESSION_NORMAL);
	iscsi_set_header_digest(ss->iscsi, ISCSI_HEADER_DIGEST_NONE);
	if (url->user[0] != '\0')
		iscsi_set_initiator_username_pwd(ss->iscsi, url->user, url->passwd);
	if (iscsi_full_connect_sync(ss->iscsi, url->portal, url->lun) != 0) {
		fprintf(stderr, "iscsi-load: login to %s failed: %s\n", url_text, iscsi_get_error(ss->iscsi));
		return 2;
	}
	ss->lun = url->lun;
	iscsi_destroy_url(url);
	iscsi_set_noautoreconnect(ss->iscsi, 1); /* a reconnect would hide a target failure */
	if (clear_unit_attention(ss->iscsi, ss->lun) != 0) {
		fprintf(stderr, "iscsi-load: TEST UNIT READY keeps failing: %s\n", iscsi_get_error(ss->iscsi));
		return 2;
	}
	struct scsi_task *rc16 = iscsi_readcapacity16_sync(ss->iscsi, ss->lun);
	if (rc16 == NULL || rc16->status != SCSI_STATUS_GOOD) {
		fprintf(stderr, "iscsi-load: READ CAPACITY(16) failed: %s\n", iscsi_get_error(ss->iscsi));
		return 2;
	}
	struct scsi_readcapacity16 *cap = scsi_datain_unmarshall(rc16);
	if (cap == NULL || cap->block_length == 0) {
		fprintf(stderr, "iscsi-load: cannot decode READ CAPACITY(16)\n");
		return 2;
	}
	ss->block_size = cap->block_length;
	ss->num_blocks = cap->returned_lba + 1;
	scsi_free_scsi_task(rc16);
	return 0;
}

static void close_session(struct sess *ss)
{
	iscsi_logout_sync(ss->iscsi);
	iscsi_destroy_context(ss->iscsi);
}

int main(int argc, char **argv)
{
	struct job job;
	double seconds = 0;
	int qd = 1;
	int per_url = 1;

	memset(&job, 0, sizeof job);
	if (argc < 3)
		usage();
	if (strcmp(argv[2], "probe") == 0) {
		job.mode = MODE_PROBE;
	} else if (strcmp(argv[2], "verify") == 0) {
		if (argc != 4)
			usage();
		job.mode = MODE_VERIFY;
		job.io_bytes = 4096;
		qd = 8;
		job.random = 1;
		job.fill_total = strtoull(argv[3], NULL, 0);
	} else if (strcmp(argv[2], "fill") == 0) {
		if (argc != 5)
			usage();
		job.mode = MODE_FILL;
		job.io_bytes = (uint32_t)strtoul(argv[3], NULL, 0);
		qd = atoi(argv[4]);
	} else {
		if (argc != 7 && argc != 8)
			usage();
		if (strcmp(argv[2], "read") == 0)
			job.mode = MODE_READ;
		else if (strcmp(argv[2], "write") == 0)
			job.mode = MODE_WRITE;
		else
			usage();
		if (strcmp(argv[3], "rand") == 0)
			job.random = 1;
		else if (strcmp(argv[3], "seq") != 0)
			usage();
		job.io_bytes = (uint32_t)strtoul(argv[4], NULL, 0);
		qd = atoi(argv[5]);
		if (strncmp(argv[6], "ios=", 4) == 0) {
			job.max_ios = strtoull(argv[6] + 4, NULL, 0);
			if (job.max_ios == 0)
				usage();
		} else {
			seconds = atof(argv[6]);
			if (seconds <= 0)
				usage();
		}
		if (argc == 8)
			per_url = atoi(argv[7]);
	}
	if (job.mode != MODE_PROBE && (job.io_bytes == 0 || qd < 1 || qd > 1024))
		usage();
	if (per_url < 1 || per_url > MAX_SESSIONS)
		usage();

	/* Sessions: every URL of the comma-separated list, per_url times (fill/verify/probe: the first URL once). */
	char *urls[MAX_SESSIONS];
	int nurls = 0;
	for (char *u = strtok(argv[1], ","); u != NULL && nurls < MAX_SESSIONS; u = strtok(NULL, ","))
		urls[nurls++] = u;
	if (nurls == 0)
		usage();
	int nsess = (job.mode == MODE_READ || job.mode == MODE_WRITE) ? nurls * per_url : 1;
	if (nsess > MAX_SESSIONS) {
		fprintf(stderr, "iscsi-load: at most %d sessions\n", MAX_SESSIONS);
		return 1;
	}
	struct sess *sessions = calloc((size_t)nsess, sizeof *sessions);
	if (sessions == NULL)
		return 2;
	uint64_t seed = 0x9E3779B97F4A7C15ull ^ (uint64_t)time(NULL) ^ ((uint64_t)getpid() << 32);
	for (int i = 0; i < nsess; i++) {
		struct sess *ss = &sessions[i];
		ss->job = &job;
		int rc = open_session(ss, urls[i % nurls], (unsigned)i);
		if (rc != 0)
			return rc;
		ss->rng = seed ^ ((uint64_t)(i + 1) * 0xBF58476D1CE4E5B9ull);
		xorshift64(&ss->rng);
	}

	if (job.mode == MODE_PROBE) {
		printf("{\"blocks\":%" PRIu64 ",\"block_size\":%u}\n", sessions[0].num_blocks, sessions[0].block_size);
		close_session(&sessions[0]);
		return 0;
	}
	for (int i = 0; i < nsess; i++) {
		struct sess *ss = &sessions[i];
		if (job.io_bytes % ss->block_size != 0) {
			fprintf(stderr, "iscsi-load: %u is not a multiple of the block size %u\n", job.io_bytes,
				ss->block_size);
			return 1;
		}
		ss->io_blocks = job.io_bytes / ss->block_size;
		ss->slots_total = ss->num_blocks / ss->io_blocks;
		if (ss->slots_total == 0) {
			fprintf(stderr, "iscsi-load: LU smaller than one command\n");
			return 1;
		}
	}
	if (job.mode == MODE_FILL)
		job.fill_total = sessions[0].slots_total;

	job.hist = calloc(HIST_US, sizeof *job.hist);
	struct slot *slots = calloc((size_t)nsess * (size_t)qd, sizeof *slots);
	struct pollfd *pfds = calloc((size_t)nsess, sizeof *pfds);
	if (job.hist == NULL || slots == NULL || pfds == NULL)
		return 2;
	uint64_t fill_rng = seed;
	for (int i = 0; i < nsess * qd; i++) {
		slots[i].sess = &sessions[i / qd];
		if (posix_memalign((void **)&slots[i].buf, 4096, job.io_bytes) != 0)
			return 2;
		/* Non-zero, incompressible-ish data so that nothing can shortcut zeroes. */
		for (uint32_t b = 0; b < job.io_bytes; b += 8) {
			uint64_t v = xorshift64(&fill_rng);
			memcpy(slots[i].buf + b, &v, job.io_bytes - b >= 8 ? 8 : job.io_bytes - b);
		}
	}

	uint64_t start = now_ns();
	uint64_t deadline = (job.mode == MODE_FILL || job.mode == MODE_VERIFY || job.max_ios) ? UINT64_MAX
												: start + (uint64_t)(seconds * 1e9);
	for (int i = 0; i < nsess * qd && !job.stop; i++)
		if (submit(slots[i].sess, &slots[i]) != 0)
			return 2;
	for (;;) {
		int busy = 0;
		for (int i = 0; i < nsess; i++) {
			pfds[i].fd = iscsi_get_fd(sessions[i].iscsi);
			pfds[i].events = (short)iscsi_which_events(sessions[i].iscsi);
			pfds[i].revents = 0;
			busy += sessions[i].in_flight;
		}
		if (busy == 0)
			break;
		int n = poll(pfds, (nfds_t)nsess, 100);
		if (n < 0 && errno != EINTR) {
			perror("iscsi-load: poll");
			return 2;
		}
		for (int i = 0; i < nsess; i++) {
			if (iscsi_service(sessions[i].iscsi, n > 0 ? pfds[i].revents : 0) < 0) {
				fprintf(stderr, "iscsi-load: connection error: %s\n", iscsi_get_error(sessions[i].iscsi));
				return 2;
			}
		}
		if (now_ns() >= deadline)
			job.stop = 1;
	}
	double elapsed = (double)(now_ns() - start) / 1e9;
	if (job.failed)
		return 2;
	if (job.mode == MODE_VERIFY) {
		printf("{\"checked\":%" PRIu64 ",\"mismatches\":%" PRIu64 "}\n", job.completed, job.mismatches);
		close_session(&sessions[0]);
		return job.mismatches ? 3 : 0;
	}

	double iops = (double)job.completed / elapsed;
	double smin = -1, smax = 0;
	for (int i = 0; i < nsess; i++) {
		double v = (double)sessions[i].completed / elapsed;
		if (smin < 0 || v < smin)
			smin = v;
		if (v > smax)
			smax = v;
	}
	printf("{\"ios\":%" PRIu64 ",\"seconds\":%.3f,\"iops\":%.1f,\"MBps\":%.1f,"
	       "\"lat_us\":{\"mean\":%.1f,\"p50\":%" PRIu64 ",\"p99\":%" PRIu64 ",\"p999\":%" PRIu64 ",\"max\":%.1f},"
	       "\"blocks\":%" PRIu64 ",\"block_size\":%u,\"sessions\":%d,\"session_iops\":{\"min\":%.1f,\"max\":%.1f}}\n",
	       job.completed, elapsed, iops, iops * job.io_bytes / 1e6,
	       job.completed ? (double)job.lat_sum_ns / (double)job.completed / 1e3 : 0.0,
	       percentile_us(&job, 0.50), percentile_us(&job, 0.99), percentile_us(&job, 0.999),
	       (double)job.lat_max_ns / 1e3, sessions[0].num_blocks, sessions[0].block_size, nsess, smin, smax);
	for (int i = 0; i < nsess; i++)
		close_session(&sessions[i]);
	return 0;
}
