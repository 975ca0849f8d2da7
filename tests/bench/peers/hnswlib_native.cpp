// hnswlib built for this CPU, as a benchmark peer of slimvec-bench.
//
// Debian's python3-hnswlib is compiled without AVX; this program compiles
// the same hnswlib (0.6.2, the header-only libhnswlib-dev) with
// -O3 -march=native, so its distance kernels are the best this CPU has.
// It is a benchmark peer only, never part of the default build:
// compare.py compiles it on the fly (g++ -O3 -march=native -std=c++17
// -pthread) into a cache directory (peers/runners.py); it is no CMake
// target.
//
// Reads a TEXMEX .fvecs base and query file and an .ivecs ground truth,
// builds a HierarchicalNSW index (addPoint from --threads threads), then for
// each --ef measures single-thread recall@10, QPS (queries / summed
// per-query wall time), p50 and p99 latency, after one warm-up pass. Writes
// JSON in the shape of hnswlib_bench.py's.
//
// Filtered search (--filter-dir, --filter-selectivity; slimvec-bench
// --filter-out writes the inputs: attrs.ivecs, each row's class and u, and
// filtered-<share>.gt.ivecs, the exact filtered top 10 of the first 1,000
// queries, -1 where fewer pass). The filters are slimvec-bench's and
// faiss_bench.py's: 0.1 is class 3, any other share u < 1000 x share.
// hnswlib 0.6.2 has no filter argument (isIdAllowed, a BaseFilterFunctor,
// came in 0.7.0), so each share's failing rows are marked deleted
// (markDelete by label), the same ef sweep runs (single thread, one query
// at a time, warm-up pass first), and they are unmarked (unmarkDelete).
// This is 0.7's filtered search: in 0.7 searchBaseLayerST tests
// isIdAllowed at exactly the places where 0.6.2 tests isMarkedDeleted (the
// entry point, and each candidate before it enters the result set; both
// are still traversed), and a filter, like a deletion, makes the loop go
// on past the bound until the result set holds ef elements (or no
// candidate is left). The upper layers check neither. The one
// difference: with no row failing, 0.6.2 takes the
// unfiltered path (num_deleted_ is 0) where 0.7 would still wait for ef
// results. Costs: the mark is a bit in the element's level-0 block, next
// to its vector; 0.7 calls a virtual functor with the label instead, so the
// search visits the same nodes and the time can differ only by that check.
// markDelete and unmarkDelete run outside the timed loop; unmarkDelete only
// clears the bit markDelete set and decrements num_deleted_, and the program
// checks that the level-0 memory hashes as before and num_deleted_ is 0.
//
//   hnswlib-native --base B.fvecs --query Q.fvecs --gt G.ivecs [--metric l2|ip|cosine]
//                  [--threads 0] [--M 16] [--ef-construction 200] [--seed 100]
//                  [--ef 10,16,...] [--dataset NAME] [--json OUT]
//                  [--filter-dir DIR --filter-selectivity 0.5,0.1,...]
#include <hnswlib/hnswlib.h>
#include <malloc.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cerrno>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <sstream>
#include <string>
#include <string_view>
#include <thread>
#include <unordered_set>
#include <vector>

namespace {

constexpr size_t K = 10;
constexpr const char *BUILD_NOTE = "hnswlib 0.6.2 headers (Debian libhnswlib-dev), g++ -O3 -march=native";

#if defined(__AVX512F__)
constexpr const char *SIMD = "avx512";
#elif defined(__AVX__)
constexpr const char *SIMD = "avx";
#elif defined(__SSE__)
constexpr const char *SIMD = "sse";
#else
constexpr const char *SIMD = "none";
#endif

[[noreturn]] void die(const std::string &msg) {
    std::fprintf(stderr, "hnswlib-native: %s\n", msg.c_str());
    std::exit(2);
}

// A TEXMEX file: rows records of a 4-byte dimension header and dim 4-byte
// values (float for .fvecs, int32 for .ivecs).
template <typename T>
struct Matrix {
    size_t rows = 0, dim = 0;
    std::vector<T> data;
    T *row(size_t i) { return data.data() + i * dim; }
    const T *row(size_t i) const { return data.data() + i * dim; }
};

template <typename T>
Matrix<T> read_vecs(const std::string &path) {
    std::ifstream in(path, std::ios::binary | std::ios::ate);
    if (!in)
        die(path + ": cannot open");
    std::vector<char> raw(size_t(in.tellg()));
    in.seekg(0);
    if (!in.read(raw.data(), std::streamsize(raw.size())))
        die(path + ": cannot read");
    if (raw.size() < 4 || raw.size() % 4 != 0)
        die(path + ": size " + std::to_string(raw.size()) + " is not a whole number of 4-byte values");
    int32_t dim;
    std::memcpy(&dim, raw.data(), 4);
    if (dim <= 0 || dim > (1 << 20))
        die(path + ": offset 0: dimension header " + std::to_string(dim) + " is not in 1..1048576");
    size_t rec = 4 * (size_t(dim) + 1);
    if (raw.size() % rec != 0)
        die(path + ": size " + std::to_string(raw.size()) + " is not a multiple of the record size " +
            std::to_string(rec) + ": truncated, or not a TEXMEX file");
    Matrix<T> m;
    m.rows = raw.size() / rec;
    m.dim = size_t(dim);
    m.data.resize(m.rows * m.dim);
    for (size_t r = 0; r < m.rows; r++) {
        int32_t h;
        std::memcpy(&h, raw.data() + r * rec, 4);
        if (h != dim)
            die(path + ": record " + std::to_string(r) + " at offset " + std::to_string(r * rec) +
                " has dimension header " + std::to_string(h) + ", expected " + std::to_string(dim));
        std::memcpy(m.row(r), raw.data() + r * rec + 4, 4 * m.dim);
    }
    return m;
}

// VmRSS from /proc/self/status, in bytes, after handing free heap pages
// back to the system (else the index could reuse pages the readers freed
// but which still count as resident, and its delta would come out short).
long long read_rss() {
    malloc_trim(0);
    std::ifstream in("/proc/self/status");
    std::string line;
    while (std::getline(in, line))
        if (line.compare(0, 6, "VmRSS:") == 0)
            return std::atoll(line.c_str() + 6) * 1024LL;
    die("/proc/self/status: no VmRSS line");
}

void normalise(Matrix<float> &m) {
    for (size_t i = 0; i < m.rows; i++) {
        float *v = m.row(i);
        double s = 0;
        for (size_t j = 0; j < m.dim; j++)
            s += double(v[j]) * v[j];
        if (s > 0) {
            float inv = float(1.0 / std::sqrt(s));
            for (size_t j = 0; j < m.dim; j++)
                v[j] *= inv;
        }
    }
}

size_t parse_count(const char *flag, const std::string &s, size_t min) {
    char *end = nullptr;
    unsigned long long v = std::strtoull(s.c_str(), &end, 10);
    if (s.empty() || *end || s[0] == '-' || v < min)
        die(std::string(flag) + ": '" + s + "' is not a whole number >= " + std::to_string(min));
    return size_t(v);
}

std::string json_str(const std::string &s) {
    std::string out = "\"";
    for (unsigned char c : s) {
        if (c == '"' || c == '\\') {
            out += '\\';
            out += char(c);
        } else if (c < 0x20) {
            char buf[8];
            std::snprintf(buf, sizeof buf, "\\u%04x", c);
            out += buf;
        } else {
            out += char(c);
        }
    }
    return out + "\"";
}

struct Point {
    size_t ef;
    double recall, qps, p50_us, p99_us;
};

// The nearest-rank percentile of sorted values, as hnswlib_bench.py takes it.
double percentile(const std::vector<double> &sorted, double q) {
    long i = long(std::ceil(q * double(sorted.size()))) - 1;
    return sorted[size_t(std::max(0L, i))];
}

struct FilteredPoint {
    double selectivity;
    size_t matches, ef;
    double recall, qps, p50_us, p99_us;
    bool all_pass;
};

// The level-0 block of every element (links with the delete mark, vector,
// label): what markDelete changes. To check that unmarkDelete restored it.
size_t level0_hash(const hnswlib::HierarchicalNSW<float> &index) {
    return std::hash<std::string_view>{}(
        std::string_view(index.data_level0_memory_, index.cur_element_count * index.size_data_per_element_));
}

// For each share: the rows that fail its filter marked deleted (not timed),
// the ef sweep, single thread, one query at a time after a warm-up pass,
// recall@10 against the exact filtered answers (-1 entries ignored), then
// the rows unmarked. The index is left as it was (checked).
std::vector<FilteredPoint> filtered_sweep(hnswlib::HierarchicalNSW<float> &index, const Matrix<float> &query,
                                          const std::vector<size_t> &efs, const std::string &dir,
                                          const std::vector<double> &shares) {
    Matrix<int32_t> attrs = read_vecs<int32_t>(dir + "/attrs.ivecs");
    size_t n = index.cur_element_count;
    if (attrs.rows != n || attrs.dim != 2)
        die(dir + "/attrs.ivecs: " + std::to_string(attrs.rows) + " rows of " + std::to_string(attrs.dim) +
            " values; need " + std::to_string(n) + " rows of (class, u)");
    if (index.num_deleted_ != 0)
        die("the index has deleted elements before the filtered sweep");
    size_t hash_before = level0_hash(index);
    std::vector<FilteredPoint> points;
    std::printf("\nfiltered search (the failing rows marked deleted, hnswlib 0.6.2; single thread, k=%zu,\n"
                "one query at a time, warm-up pass first; marking not timed):\n", K);
    std::printf("%12s %10s %10s %12s %12s %10s %10s %10s\n", "selectivity", "matches", "ef", "recall@10", "QPS",
                "p50 us", "p99 us", "mark ms");
    for (double s : shares) {
        // slimvec-bench's rule (filtered.c): class 3 for 0.1, else u < llround(1000 s).
        bool by_class = std::fabs(s - 0.1) < 1e-9;
        long long below = std::llround(s * 1000.0);
        std::vector<char> pass(n);
        size_t matches = 0;
        for (size_t i = 0; i < n; i++) {
            pass[i] = by_class ? attrs.row(i)[0] == 3 : attrs.row(i)[1] < below;
            matches += size_t(pass[i]);
        }
        char name[64];
        std::snprintf(name, sizeof name, "/filtered-%g.gt.ivecs", s);
        Matrix<int32_t> gt = read_vecs<int32_t>(dir + name);
        size_t nq = gt.rows;
        if (nq > query.rows || gt.dim < K)
            die(dir + name + ": " + std::to_string(nq) + " rows of " + std::to_string(gt.dim) + " ids; need at most " +
                std::to_string(query.rows) + " rows of >= 10");
        auto m0 = std::chrono::steady_clock::now();
        for (size_t i = 0; i < n; i++)
            if (!pass[i])
                index.markDelete(hnswlib::labeltype(i));
        double mark_ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - m0).count();
        if (index.num_deleted_ != n - matches)
            die("markDelete: " + std::to_string(index.num_deleted_) + " marked, expected " +
                std::to_string(n - matches));
        std::vector<double> lat(nq);
        std::vector<std::vector<hnswlib::labeltype>> found(nq);
        for (size_t ef : efs) {
            index.setEf(ef);
            for (size_t q = 0; q < nq; q++)
                index.searchKnn(query.row(q), K);
            for (size_t q = 0; q < nq; q++) {
                auto a = std::chrono::steady_clock::now();
                auto res = index.searchKnn(query.row(q), K);
                auto b = std::chrono::steady_clock::now();
                lat[q] = std::chrono::duration<double, std::micro>(b - a).count();
                found[q].clear();
                for (; !res.empty(); res.pop())
                    found[q].push_back(res.top().second);
            }
            size_t hits = 0, wanted = 0, clean = 0;
            for (size_t q = 0; q < nq; q++) {
                std::unordered_set<long long> truth;
                for (size_t j = 0; j < K; j++)
                    if (gt.row(q)[j] >= 0)
                        truth.insert(gt.row(q)[j]);
                wanted += truth.size();
                bool ok = true;
                for (hnswlib::labeltype l : found[q]) {
                    hits += truth.count((long long)l);
                    ok = ok && l < n && pass[l];
                }
                clean += ok;
            }
            double total_us = 0;
            for (double l : lat)
                total_us += l;
            std::vector<double> sorted = lat;
            std::sort(sorted.begin(), sorted.end());
            FilteredPoint p{s, matches, ef, wanted ? double(hits) / double(wanted) : 1.0,
                            total_us > 0 ? double(nq) / (total_us / 1e6) : 0.0, percentile(sorted, 0.50),
                            percentile(sorted, 0.99), clean == nq};
            points.push_back(p);
            std::printf("%12g %10zu %10zu %12.4f %12.0f %10.1f %10.1f %10.1f\n", s, matches, ef, p.recall, p.qps,
                        p.p50_us, p.p99_us, mark_ms);
            std::fflush(stdout);
        }
        for (size_t i = 0; i < n; i++)
            if (!pass[i])
                index.unmarkDelete(hnswlib::labeltype(i));
    }
    if (index.num_deleted_ != 0 || level0_hash(index) != hash_before)
        die("unmarkDelete did not restore the index");
    std::printf("index restored: no element marked, level-0 memory hashes as before the sweep\n");
    return points;
}

}  // namespace

int main(int argc, char **argv) {
    std::string base_path, query_path, gt_path, metric = "l2", dataset, json_path;
    std::string ef_list = "10,16,20,32,40,50,64,80,100,128,160,200,256,400,512";
    std::string filter_dir, filter_list;
    size_t threads = 0, M = 16, efc = 200, seed = 100;
    for (int i = 1; i < argc; i++) {
        std::string a = argv[i];
        if (a == "-h" || a == "--help") {
            std::printf("usage: hnswlib-native --base B.fvecs --query Q.fvecs --gt G.ivecs [--metric l2|ip|cosine]\n"
                        "       [--threads 0] [--M 16] [--ef-construction 200] [--seed 100]\n"
                        "       [--ef 10,16,...] [--dataset NAME] [--json OUT]\n"
                        "       [--filter-dir DIR --filter-selectivity 0.5,0.1,0.01,0.001]\n");
            return 0;
        }
        if (i + 1 >= argc)
            die(a + ": needs a value (or unknown option)");
        std::string v = argv[++i];
        if (a == "--base") base_path = v;
        else if (a == "--query") query_path = v;
        else if (a == "--gt") gt_path = v;
        else if (a == "--metric") metric = v;
        else if (a == "--threads") threads = parse_count("--threads", v, 0);
        else if (a == "--M") M = parse_count("--M", v, 2);
        else if (a == "--ef-construction") efc = parse_count("--ef-construction", v, 1);
        else if (a == "--seed") seed = parse_count("--seed", v, 0);
        else if (a == "--ef") ef_list = v;
        else if (a == "--dataset") dataset = v;
        else if (a == "--json") json_path = v;
        else if (a == "--filter-dir") filter_dir = v;
        else if (a == "--filter-selectivity") filter_list = v;
        else die("unknown option " + a);
    }
    if (base_path.empty() || query_path.empty() || gt_path.empty())
        die("need --base, --query and --gt");
    if (metric != "l2" && metric != "ip" && metric != "cosine")
        die("--metric: '" + metric + "' is not l2, ip or cosine");
    std::vector<size_t> efs;
    {
        std::stringstream ss(ef_list);
        std::string tok;
        while (std::getline(ss, tok, ','))
            if (size_t ef = parse_count("--ef", tok, 1); ef >= K)
                efs.push_back(ef);  // hnswlib searches with max(ef, k) anyway
        if (efs.empty())
            die("--ef: no value >= k=10");
    }
    if (filter_dir.empty() != filter_list.empty())
        die("--filter-dir and --filter-selectivity go together");
    std::vector<double> shares;
    {
        std::stringstream ss(filter_list);
        std::string tok;
        while (std::getline(ss, tok, ',')) {
            char *end = nullptr;
            double v = std::strtod(tok.c_str(), &end);
            if (tok.empty() || *end || !(v > 0 && v <= 1))
                die("--filter-selectivity: '" + tok + "' is not a share in (0, 1]");
            shares.push_back(v);
        }
    }
    unsigned cores = std::max(1u, std::thread::hardware_concurrency());
    size_t nthreads = threads ? threads : cores;

    Matrix<float> base = read_vecs<float>(base_path);
    Matrix<float> query = read_vecs<float>(query_path);
    Matrix<int32_t> gt = read_vecs<int32_t>(gt_path);
    size_t n = base.rows, dim = base.dim, nq = query.rows;
    if (query.dim != dim)
        die(base_path + " has dimension " + std::to_string(dim) + " but " + query_path + " has " +
            std::to_string(query.dim));
    if (gt.rows != nq || gt.dim < K)
        die(gt_path + ": " + std::to_string(gt.rows) + " rows of " + std::to_string(gt.dim) +
            " ids; need one row of >= 10 per query");
    if (n < K)
        die(base_path + ": need at least 10 base vectors");
    // Cosine: unit vectors, then inner product (hnswlib's own "cosine").
    if (metric == "cosine") {
        normalise(base);
        normalise(query);
    }
    hnswlib::L2Space l2(dim);
    hnswlib::InnerProductSpace ip(dim);
    hnswlib::SpaceInterface<float> *space = metric == "l2" ? static_cast<hnswlib::SpaceInterface<float> *>(&l2) : &ip;

    std::printf("hnswlib-native (%s) %s: n %zu, dim %zu, queries %zu, M %zu, ef_construction %zu, threads %zu\n",
                SIMD, metric.c_str(), n, dim, nq, M, efc, nthreads);
    std::fflush(stdout);

    // The inputs are loaded before the baseline and live to the end, so the
    // delta is the index alone.
    long long rss_before = read_rss();
    auto t0 = std::chrono::steady_clock::now();
    auto *index = new hnswlib::HierarchicalNSW<float>(space, n, M, efc, seed);
    // The first point alone (it becomes the entry point), then the rest
    // from nthreads threads taking ids off one counter.
    index->addPoint(base.row(0), 0);
    std::atomic<size_t> next{1};
    std::vector<std::thread> pool;
    for (size_t t = 0; t < nthreads; t++)
        pool.emplace_back([&] {
            for (size_t i; (i = next.fetch_add(1)) < n;)
                index->addPoint(base.row(i), hnswlib::labeltype(i));
        });
    for (auto &th : pool)
        th.join();
    double build_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    long long rss_after = read_rss();
    double bpv_rss = double(rss_after - rss_before) / double(n);
    // Layer 0 per element as hnswlib lays it out: 2M links + a count, the
    // float vector, the 8-byte label.
    size_t bpv_level0 = (2 * M * 4 + 4) + dim * 4 + 8;
    std::printf("build: %.2f s, %.0f vectors/s\nmemory: RSS %.1f B/vector (layer 0 alone: %zu B)\n",
                build_seconds, double(n) / build_seconds, bpv_rss, bpv_level0);

    std::printf("\nsearch (single thread, k=%zu, %zu queries, warm-up pass first):\n", K, nq);
    std::printf("%12s %12s %12s %10s %10s\n", "ef", "recall@10", "QPS", "p50 us", "p99 us");
    std::vector<Point> points;
    std::vector<double> lat(nq);
    std::vector<hnswlib::labeltype> found(nq * K);
    for (size_t ef : efs) {
        index->setEf(ef);
        for (size_t q = 0; q < nq; q++)
            index->searchKnn(query.row(q), K);
        for (size_t q = 0; q < nq; q++) {
            auto a = std::chrono::steady_clock::now();
            auto res = index->searchKnn(query.row(q), K);
            auto b = std::chrono::steady_clock::now();
            lat[q] = std::chrono::duration<double, std::micro>(b - a).count();
            for (size_t j = 0; j < K; j++) {
                found[q * K + j] = res.empty() ? hnswlib::labeltype(-1) : res.top().second;
                if (!res.empty())
                    res.pop();
            }
        }
        size_t hits = 0;
        for (size_t q = 0; q < nq; q++) {
            std::unordered_set<long long> truth(gt.row(q), gt.row(q) + K);
            for (size_t j = 0; j < K; j++)
                hits += truth.count((long long)found[q * K + j]);
        }
        double total_us = 0;
        for (double l : lat)
            total_us += l;
        std::vector<double> sorted = lat;
        std::sort(sorted.begin(), sorted.end());
        Point p{ef, double(hits) / double(K * nq), double(nq) / (total_us / 1e6), percentile(sorted, 0.50),
                percentile(sorted, 0.99)};
        points.push_back(p);
        std::printf("%12zu %12.4f %12.0f %10.1f %10.1f\n", ef, p.recall, p.qps, p.p50_us, p.p99_us);
        std::fflush(stdout);
    }
    std::vector<FilteredPoint> filtered;
    if (!shares.empty())
        filtered = filtered_sweep(*index, query, efs, filter_dir, shares);
    delete index;

    if (json_path.empty())
        return 0;
    FILE *f = std::fopen(json_path.c_str(), "w");
    if (!f)
        die(json_path + ": cannot write: " + std::strerror(errno));
    std::fprintf(f, "{\n  \"engine\": \"hnswlib-native\",\n  \"build\": %s,\n  \"hnswlib_build\": %s,\n"
                    "  \"simd\": \"%s\",\n  \"dataset\": %s,\n",
                 json_str(BUILD_NOTE).c_str(), json_str(BUILD_NOTE).c_str(), SIMD,
                 dataset.empty() ? "null" : json_str(dataset).c_str());
    std::fprintf(f, "  \"files\": {\"base\": %s, \"query\": %s, \"gt\": %s},\n",
                 json_str(base_path).c_str(), json_str(query_path).c_str(), json_str(gt_path).c_str());
    std::fprintf(f, "  \"metric\": \"%s\",\n  \"storage\": \"f32\",\n  \"M\": %zu,\n  \"ef_construction\": %zu,\n"
                    "  \"seed\": %zu,\n  \"threads\": %zu,\n  \"cores\": %u,\n  \"k\": %zu,\n  \"n\": %zu,\n"
                    "  \"dim\": %zu,\n  \"n_queries\": %zu,\n",
                 metric.c_str(), M, efc, seed, threads, cores, K, n, dim, nq);
    std::fprintf(f, "  \"build_seconds\": %.6f,\n  \"insert_rate\": %.3f,\n  \"rss_bytes_delta\": %lld,\n"
                    "  \"bytes_per_vector_arena\": null,\n  \"bytes_per_vector_rss\": %.3f,\n"
                    "  \"bytes_per_vector_level0\": %zu,\n  \"avg_degree\": null,\n  \"avg_edge_slots\": null,\n"
                    "  \"points\": [",
                 build_seconds, double(n) / build_seconds, rss_after - rss_before, bpv_rss, bpv_level0);
    for (size_t i = 0; i < points.size(); i++) {
        const Point &p = points[i];
        std::fprintf(f, "%s\n    {\"search_list\": %zu, \"ef\": %zu, \"recall_at_10\": %.6f, \"qps\": %.3f, "
                        "\"p50_us\": %.3f, \"p99_us\": %.3f}",
                     i ? "," : "", p.ef, p.ef, p.recall, p.qps, p.p50_us, p.p99_us);
    }
    std::fprintf(f, "\n  ]");
    if (!shares.empty()) {
        std::fprintf(f, ",\n  \"filter_method\": \"markDelete of the rows failing the filter, unmarkDelete after "
                        "(hnswlib 0.6.2; the search of 0.7's isIdAllowed)\",\n  \"filtered\": [");
        for (size_t i = 0; i < filtered.size(); i++) {
            const FilteredPoint &p = filtered[i];
            std::fprintf(f, "%s\n    {\"selectivity\": %.17g, \"matches\": %zu, \"search_list\": %zu, \"ef\": %zu, "
                            "\"recall_at_10\": %.6f, \"qps\": %.3f, \"p50_us\": %.3f, \"p99_us\": %.3f, "
                            "\"all_pass\": %s}",
                         i ? "," : "", p.selectivity, p.matches, p.ef, p.ef, p.recall, p.qps, p.p50_us, p.p99_us,
                         p.all_pass ? "true" : "false");
        }
        std::fprintf(f, "\n  ]");
    }
    std::fprintf(f, "\n}\n");
    if (std::fclose(f) != 0)
        die(json_path + ": write failed");
    std::printf("\nwrote %s\n", json_path.c_str());
    return 0;
}
