/* A board's own C program running a kd-edge bundle's model, as the bundle's README says: ONNX Runtime's C API,
 * the camera frame's uint8 pixels as they are, input "input", output "logits"; no kd-edge, no Python, no
 * arithmetic on the pixels (the graph normalises them).
 *
 *     consumer MODEL.onnx FRAMES.u8 N H W C [THREADS] > outputs.txt
 *
 * FRAMES.u8 holds N frames one after the other, each H x W x C uint8 pixels (or C x H x W for a model whose card
 * says NCHW: the three numbers are the frame's dimensions in the model's order). One line a frame: the index of
 * its largest output, then every output (one logit a class, or a detector's cells' logits in the graph's order),
 * separated by spaces. Without THREADS the session
 * has ONNX Runtime's default options; THREADS sets its intra-op threads and makes at least 100 timed runs (the
 * frames again where there are fewer). On stderr: the runtime's version, then the median time of a Run call by
 * this program's own clock (the first 5 runs, warm-up, not counted).
 *
 * No header of ONNX Runtime is needed, only its library (cc -O2 consumer.c -o consumer -lonnxruntime):
 * OrtGetApiBase() gives the OrtApi table, whose entries keep their positions in every release (the C API only
 * appends), so the few this program calls are taken by index. Tested by tests/test_c_consumer.py; measured on
 * x86 and emulated aarch64 by benchmarks/c_consumer.py.
 */
#define _POSIX_C_SOURCE 199309L /* clock_gettime */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

typedef void *Status; /* OrtStatus*: NULL on success */
typedef struct {
    void *const *(*get_api)(uint32_t version);
    const char *(*get_version_string)(void);
} ApiBase;
extern const ApiBase *OrtGetApiBase(void);

/* Positions in the OrtApi table (onnxruntime_c_api.h). */
enum { GET_ERROR_MESSAGE = 2, CREATE_ENV = 3, CREATE_SESSION = 7, RUN = 9, CREATE_SESSION_OPTIONS = 10,
       SET_INTRA_OP_NUM_THREADS = 24, CREATE_TENSOR_WITH_DATA = 49, GET_TENSOR_SHAPE_ELEMENT_COUNT = 64,
       GET_TENSOR_TYPE_AND_SHAPE = 65, RELEASE_TENSOR_TYPE_AND_SHAPE_INFO = 99, GET_TENSOR_MUTABLE_DATA = 51, CREATE_CPU_MEMORY_INFO = 69,
       RELEASE_VALUE = 96 };
enum { LOGGING_WARNING = 2, ELEMENT_UINT8 = 2, ARENA_ALLOCATOR = 1, MEM_TYPE_DEFAULT = 0 };
/* The C API's first version, which every entry used here exists in. */
#define API_VERSION 1

#define WARM_UP 5

static void *const *api;

static double now_ms(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1e3 + t.tv_nsec / 1e6;
}

static int by_value(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static void check(Status status, const char *what) {
    if (status == NULL) return;
    const char *(*message)(Status) = (const char *(*)(Status))api[GET_ERROR_MESSAGE];
    fprintf(stderr, "consumer: %s failed: %s\n", what, message(status));
    exit(1);
}

static void output_count(void *output, size_t *count) {
    void *info;
    check(((Status(*)(void *, void **))api[GET_TENSOR_TYPE_AND_SHAPE])(output, &info), "GetTensorTypeAndShape");
    check(((Status(*)(void *, size_t *))api[GET_TENSOR_SHAPE_ELEMENT_COUNT])(info, count), "GetTensorShapeElementCount");
    ((void (*)(void *))api[RELEASE_TENSOR_TYPE_AND_SHAPE_INFO])(info);
}

int main(int argc, char **argv) {
    const ApiBase *base = OrtGetApiBase();
    api = base->get_api(API_VERSION);
    fprintf(stderr, "consumer: ONNX Runtime %s\n", base->get_version_string());
    if (argc != 7 && argc != 8) {
        fprintf(stderr, "usage: %s MODEL.onnx FRAMES.u8 N H W C [THREADS]\n", argv[0]);
        return 2;
    }
    const char *model = argv[1], *frames_path = argv[2];
    long n = atol(argv[3]), h = atol(argv[4]), w = atol(argv[5]), c = atol(argv[6]);

    size_t frame_bytes = (size_t)(h * w * c);
    uint8_t *frames = malloc(frame_bytes * n);
    FILE *file = fopen(frames_path, "rb");
    if (file == NULL || fread(frames, 1, frame_bytes * n, file) != frame_bytes * n) {
        fprintf(stderr, "consumer: cannot read %ld frames of %zu bytes from %s\n", n, frame_bytes, frames_path);
        return 1;
    }
    fclose(file);

    void *env, *options, *session, *memory;
    check(((Status(*)(int, const char *, void **))api[CREATE_ENV])(LOGGING_WARNING, "consumer", &env), "CreateEnv");
    check(((Status(*)(void **))api[CREATE_SESSION_OPTIONS])(&options), "CreateSessionOptions");
    if (argc == 8)
        check(((Status(*)(void *, int))api[SET_INTRA_OP_NUM_THREADS])(options, atoi(argv[7])), "SetIntraOpNumThreads");
    check(((Status(*)(void *, const char *, void *, void **))api[CREATE_SESSION])(env, model, options, &session),
          "CreateSession");
    check(((Status(*)(int, int, void **))api[CREATE_CPU_MEMORY_INFO])(ARENA_ALLOCATOR, MEM_TYPE_DEFAULT, &memory),
          "CreateCpuMemoryInfo");

    const char *input_names[] = {"input"}, *output_names[] = {"logits"};
    int64_t shape[] = {1, h, w, c};
    /* With THREADS (timing), at least 100 timed runs: the frames again from the first where there are fewer. */
    long runs = argc == 8 && n < 100 + WARM_UP ? 100 + WARM_UP : n;
    size_t outputs = 0; /* floats a frame gives, read from the first output's shape */
    double *run_ms = malloc(sizeof(double) * runs);
    for (long i = 0; i < runs; i++) { /* one frame at a time, as a camera gives them */
        void *input = NULL, *output = NULL;
        float *values;
        check(((Status(*)(void *, void *, size_t, const int64_t *, size_t, int, void **))api[CREATE_TENSOR_WITH_DATA])(
                  memory, frames + (i % n) * frame_bytes, frame_bytes, shape, 4, ELEMENT_UINT8, &input),
              "CreateTensorWithDataAsOrtValue");
        double started = now_ms();
        check(((Status(*)(void *, void *, const char *const *, void *const *, size_t, const char *const *, size_t,
                          void **))api[RUN])(session, NULL, input_names, (void *const *)&input, 1, output_names, 1,
                                             &output),
              "Run");
        run_ms[i] = now_ms() - started;
        check(((Status(*)(void *, void **))api[GET_TENSOR_MUTABLE_DATA])(output, (void **)&values),
              "GetTensorMutableData");
        if (outputs == 0) output_count(output, &outputs);
        if (i < n) {
            size_t best = 0;
            for (size_t k = 1; k < outputs; k++)
                if (values[k] > values[best]) best = k;
            printf("%zu", best);
            for (size_t k = 0; k < outputs; k++) printf(" %.9g", values[k]);
            printf("\n");
        }
        ((void (*)(void *))api[RELEASE_VALUE])(output);
        ((void (*)(void *))api[RELEASE_VALUE])(input);
    }
    long timed = runs > 2 * WARM_UP ? runs - WARM_UP : runs;
    qsort(run_ms + (runs - timed), timed, sizeof(double), by_value);
    fprintf(stderr, "consumer: Run p50 %.4f ms over %ld runs\n", run_ms[runs - timed + timed / 2], timed);
    return 0;
}
