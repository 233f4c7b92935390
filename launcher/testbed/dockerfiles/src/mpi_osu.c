/*
 * mpidock-osu: the OSU micro-benchmarks' latency, bandwidth, broadcast and allreduce
 * tests, for images where OMB itself cannot be downloaded.
 *
 *   mpidock-osu latency   [--max-size BYTES] [--iterations N] [--warmup N]
 *   mpidock-osu bw        [--max-size BYTES] [--iterations N] [--warmup N] [--window W]
 *   mpidock-osu bcast     [--max-size BYTES] [--iterations N] [--warmup N]
 *   mpidock-osu allreduce [--max-size BYTES] [--iterations N] [--warmup N]
 *
 * Each follows the method of OMB 7.3's osu_latency, osu_bw, osu_bcast and osu_allreduce
 * with their default iteration counts (a smaller count above 8192 bytes), and prints what
 * they print, so one parser reads both:
 *
 *   # OSU MPI Latency Test v7.3
 *   # Size          Latency (us)
 *   0                       0.21
 *
 * Rows are "%-10d%18.2f": OMB prints "%-*d%*.*f" with 10, FIELD_WIDTH and 2, and its
 * pt2pt and collective outputs show a FIELD_WIDTH of 18. The column header uses the same
 * widths. Where we differ: OMB 7.x adds a "# Datatype: MPI_CHAR." line and skips size 0
 * in osu_latency, while we print no such line and keep size 0 (the pure latency figure);
 * --max-size defaults to 1 MiB for every test (OMB's pt2pt tests go to 4 MiB).
 *
 * latency and bw need exactly 2 ranks, bcast and allreduce at least 2. A bad option or
 * rank count prints one line on stderr (rank 0) and exits 2; a failed MPI call aborts
 * with 3.
 */
#define _POSIX_C_SOURCE 200112L /* posix_memalign, sysconf under -std=c99 */
#include <errno.h>
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define OMB_VERSION "7.3"
#define LARGE_MESSAGE 8192 /* above this size the large iteration counts apply */
#define SIZE_WIDTH 10
#define VALUE_WIDTH 18
#define DEFAULT_MAX_SIZE (1L << 20)
#define LIMIT_MAX_SIZE (1L << 30)
#define LIMIT_COUNT 1000000000L
#define DEFAULT_WINDOW 64
#define LIMIT_WINDOW 1000 /* OMB's MAX_REQ_NUM */
#define ACK_BYTES 4       /* osu_bw 7.3 acknowledges each window with 4 bytes */
#define TAG_DATA 100
#define TAG_ACK 101

#define CHECK(call) check((call), #call, __LINE__)

struct options {
    long max_size, iterations, warmup, window; /* -1: the test's default */
};

/* One size of one test, as every rank runs it. */
struct run {
    MPI_Comm comm;
    int rank, nranks;
    char *sbuf, *rbuf;
    MPI_Request *requests;
    long size, iterations, warmup, window;
};

struct test {
    const char *name, *title, *column;
    long min_size;
    int min_ranks, max_ranks; /* max_ranks 0: no upper limit */
    long iterations, warmup, iterations_large, warmup_large;
    double (*measure)(const struct run *); /* the figure printed, valid on rank 0 */
};

static void check(int rc, const char *call, int line)
{
    char text[MPI_MAX_ERROR_STRING];
    int len = 0;

    if (rc == MPI_SUCCESS) return;
    if (MPI_Error_string(rc, text, &len) != MPI_SUCCESS) snprintf(text, sizeof text, "error %d", rc);
    fprintf(stderr, "mpidock-osu: line %d: %s failed: %s\n", line, call, text);
    fflush(stderr);
    MPI_Abort(MPI_COMM_WORLD, 3);
}

static double measure_latency(const struct run *r)
{
    int peer = 1 - r->rank, n = (int)r->size;
    double start = 0.0;

    for (long i = 0; i < r->warmup + r->iterations; i++) {
        if (i == r->warmup) start = MPI_Wtime();
        if (r->rank == 0) {
            CHECK(MPI_Send(r->sbuf, n, MPI_CHAR, peer, TAG_DATA, r->comm));
            CHECK(MPI_Recv(r->rbuf, n, MPI_CHAR, peer, TAG_DATA, r->comm, MPI_STATUS_IGNORE));
        } else {
            CHECK(MPI_Recv(r->rbuf, n, MPI_CHAR, peer, TAG_DATA, r->comm, MPI_STATUS_IGNORE));
            CHECK(MPI_Send(r->sbuf, n, MPI_CHAR, peer, TAG_DATA, r->comm));
        }
    }
    return (MPI_Wtime() - start) * 1e6 / (2.0 * (double)r->iterations);
}

static void send_window(const struct run *r)
{
    for (long j = 0; j < r->window; j++)
        CHECK(MPI_Isend(r->sbuf, (int)r->size, MPI_CHAR, 1, TAG_DATA, r->comm, &r->requests[j]));
    CHECK(MPI_Waitall((int)r->window, r->requests, MPI_STATUSES_IGNORE));
    CHECK(MPI_Recv(r->rbuf, ACK_BYTES, MPI_CHAR, 1, TAG_ACK, r->comm, MPI_STATUS_IGNORE));
}

static void receive_window(const struct run *r)
{
    for (long j = 0; j < r->window; j++)
        CHECK(MPI_Irecv(r->rbuf, (int)r->size, MPI_CHAR, 0, TAG_DATA, r->comm, &r->requests[j]));
    CHECK(MPI_Waitall((int)r->window, r->requests, MPI_STATUSES_IGNORE));
    CHECK(MPI_Send(r->sbuf, ACK_BYTES, MPI_CHAR, 0, TAG_ACK, r->comm));
}

/* MB/s with MB = 1e6 bytes, over the time spent in timed windows only, as osu_bw. */
static double measure_bw(const struct run *r)
{
    double busy = 0.0;

    for (long i = 0; i < r->warmup + r->iterations; i++) {
        double start = MPI_Wtime();
        if (r->rank == 0) send_window(r);
        else receive_window(r);
        if (i >= r->warmup) busy += MPI_Wtime() - start;
    }
    return (double)r->size / 1e6 * (double)r->iterations * (double)r->window / busy;
}

static int bcast_once(const struct run *r)
{
    return MPI_Bcast(r->sbuf, (int)r->size, MPI_CHAR, 0, r->comm);
}

static int allreduce_once(const struct run *r)
{
    int count = (int)(r->size / (long)sizeof(float));
    return MPI_Allreduce(r->sbuf, r->rbuf, count, MPI_FLOAT, MPI_SUM, r->comm);
}

/*
 * Each call timed alone with a barrier after it (outside the timing), each rank's mean
 * in microseconds, then the mean over ranks: osu_bcast's and osu_allreduce's "Avg".
 */
static double measure_collective(const struct run *r, int (*once)(const struct run *))
{
    double busy = 0.0, mine, sum = 0.0;

    for (long i = 0; i < r->warmup + r->iterations; i++) {
        double start = MPI_Wtime();
        CHECK(once(r));
        double stop = MPI_Wtime();
        CHECK(MPI_Barrier(r->comm));
        if (i >= r->warmup) busy += stop - start;
    }
    mine = busy * 1e6 / (double)r->iterations;
    CHECK(MPI_Reduce(&mine, &sum, 1, MPI_DOUBLE, MPI_SUM, 0, r->comm));
    return sum / r->nranks;
}

static double measure_bcast(const struct run *r) { return measure_collective(r, bcast_once); }

static double measure_allreduce(const struct run *r) { return measure_collective(r, allreduce_once); }

/* Default counts are OMB's: LAT_*, BW_* and COLL_* in osu_util.h. */
static const struct test TESTS[] = {
    {"latency", "Latency Test", "Latency (us)", 0, 2, 2, 10000, 100, 1000, 10, measure_latency},
    {"bw", "Bandwidth Test", "Bandwidth (MB/s)", 1, 2, 2, 100, 10, 20, 2, measure_bw},
    {"bcast", "Broadcast Latency Test", "Avg Latency(us)", 1, 2, 0, 1000, 100, 100, 10,
     measure_bcast},
    {"allreduce", "Allreduce Latency Test", "Avg Latency(us)", (long)sizeof(float), 2, 0, 1000,
     100, 100, 10, measure_allreduce},
};
#define NTESTS ((int)(sizeof TESTS / sizeof TESTS[0]))

static const struct test *find_test(const char *name)
{
    for (int i = 0; i < NTESTS; i++)
        if (!strcmp(TESTS[i].name, name)) return &TESTS[i];
    return NULL;
}

/* A whole number in [low, high] into *out; 0 on success. */
static int parse_long(const char *text, long low, long high, long *out)
{
    char *end;
    long value;

    errno = 0;
    value = strtol(text, &end, 10);
    if (errno || end == text || *end || value < low || value > high) return -1;
    *out = value;
    return 0;
}

static long *option_slot(struct options *o, const char *name, const struct test *t)
{
    if (!strcmp(name, "--max-size")) return &o->max_size;
    if (!strcmp(name, "--iterations")) return &o->iterations;
    if (!strcmp(name, "--warmup")) return &o->warmup;
    if (!strcmp(name, "--window") && t->measure == measure_bw) return &o->window;
    return NULL;
}

static void option_range(const char *name, long *low, long *high)
{
    *low = 1;
    *high = LIMIT_COUNT;
    if (!strcmp(name, "--max-size")) *low = 0, *high = LIMIT_MAX_SIZE;
    else if (!strcmp(name, "--warmup")) *low = 0;
    else if (!strcmp(name, "--window")) *high = LIMIT_WINDOW;
}

/* Reads the test and its options; on error writes a one-line message and returns -1. */
static int parse_args(int argc, char **argv, const struct test **t, struct options *o,
                      char *err, size_t errlen)
{
    *o = (struct options){-1, -1, -1, -1};
    *t = argc > 1 ? find_test(argv[1]) : NULL;
    if (argc < 2) {
        snprintf(err, errlen, "no test given (usage: mpidock-osu latency|bw|bcast|allreduce "
                 "[--max-size BYTES] [--iterations N] [--warmup N] [--window W])");
        return -1;
    }
    if (!*t) {
        snprintf(err, errlen, "unknown test '%s' (valid: latency, bw, bcast, allreduce)", argv[1]);
        return -1;
    }
    for (int i = 2; i < argc; i += 2) {
        long low, high, *slot = option_slot(o, argv[i], *t);
        if (!slot) {
            snprintf(err, errlen, "unknown option '%s' for %s (valid: --max-size, --iterations, "
                     "--warmup%s)", argv[i], (*t)->name, (*t)->measure == measure_bw ? ", --window" : "");
            return -1;
        }
        option_range(argv[i], &low, &high);
        if (i + 1 >= argc || parse_long(argv[i + 1], low, high, slot)) {
            snprintf(err, errlen, "%s needs a whole number from %ld to %ld, got '%s'", argv[i], low,
                     high, i + 1 < argc ? argv[i + 1] : "");
            return -1;
        }
    }
    if (o->max_size < 0) o->max_size = DEFAULT_MAX_SIZE;
    if (o->window < 0) o->window = DEFAULT_WINDOW;
    if (o->max_size < (*t)->min_size) {
        snprintf(err, errlen, "--max-size %ld is below %s's smallest size %ld", o->max_size,
                 (*t)->name, (*t)->min_size);
        return -1;
    }
    return 0;
}

static int check_ranks(const struct test *t, int nranks, char *err, size_t errlen)
{
    if (nranks < t->min_ranks || (t->max_ranks && nranks > t->max_ranks)) {
        snprintf(err, errlen, "%s needs %s %d ranks, got %d", t->name,
                 t->max_ranks ? "exactly" : "at least", t->min_ranks, nranks);
        return -1;
    }
    return 0;
}

/* A page-aligned buffer, written once so that no page fault lands in the timing. */
static char *touched_buffer(long bytes, int fill)
{
    void *p = NULL;
    long page = sysconf(_SC_PAGESIZE);

    if (bytes < ACK_BYTES) bytes = ACK_BYTES;
    if (posix_memalign(&p, page > 0 ? (size_t)page : 4096, (size_t)bytes)) {
        fprintf(stderr, "mpidock-osu: cannot allocate %ld bytes\n", bytes);
        MPI_Abort(MPI_COMM_WORLD, 3);
    }
    memset(p, fill, (size_t)bytes);
    return p;
}

static void print_header(const struct test *t)
{
    printf("# OSU MPI %s v%s\n", t->title, OMB_VERSION);
    printf("%-*s%*s\n", SIZE_WIDTH, "# Size", VALUE_WIDTH, t->column);
    fflush(stdout);
}

static void run_sizes(const struct test *t, const struct options *o, struct run *r)
{
    if (r->rank == 0) print_header(t);
    for (long size = t->min_size; size <= o->max_size; size = size ? size * 2 : 1) {
        int large = size > LARGE_MESSAGE;
        r->size = size;
        r->iterations = o->iterations > 0 ? o->iterations : large ? t->iterations_large : t->iterations;
        r->warmup = o->warmup >= 0 ? o->warmup : large ? t->warmup_large : t->warmup;
        CHECK(MPI_Barrier(r->comm));
        double value = t->measure(r);
        if (r->rank == 0) {
            printf("%-*ld%*.*f\n", SIZE_WIDTH, size, VALUE_WIDTH, 2, value);
            fflush(stdout);
        }
    }
}

static void usage_error(int rank, const char *message)
{
    if (rank == 0) {
        fprintf(stderr, "mpidock-osu: %s\n", message);
        fflush(stderr);
    }
    MPI_Finalize();
    exit(2);
}

int main(int argc, char **argv)
{
    const struct test *t;
    struct options o;
    struct run r = {.comm = MPI_COMM_WORLD};
    char err[256];

    if (MPI_Init(&argc, &argv) != MPI_SUCCESS) {
        fprintf(stderr, "mpidock-osu: MPI_Init failed\n");
        return 3;
    }
    /* Errors come back to CHECK, which names the call, rather than aborting anonymously. */
    CHECK(MPI_Comm_set_errhandler(r.comm, MPI_ERRORS_RETURN));
    CHECK(MPI_Comm_rank(r.comm, &r.rank));
    CHECK(MPI_Comm_size(r.comm, &r.nranks));
    if (parse_args(argc, argv, &t, &o, err, sizeof err) || check_ranks(t, r.nranks, err, sizeof err))
        usage_error(r.rank, err);

    r.window = o.window;
    r.sbuf = touched_buffer(o.max_size, 0);
    r.rbuf = touched_buffer(o.max_size, 0);
    r.requests = malloc(sizeof *r.requests * (size_t)o.window);
    if (!r.requests) {
        fprintf(stderr, "mpidock-osu: cannot allocate %ld requests\n", o.window);
        MPI_Abort(r.comm, 3);
    }
    run_sizes(t, &o, &r);

    free(r.requests);
    free(r.rbuf);
    free(r.sbuf);
    return MPI_Finalize() == MPI_SUCCESS ? 0 : 3;
}
