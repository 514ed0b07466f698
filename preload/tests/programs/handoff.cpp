// Threads that build containers and strings and hand them to each other through queues: every
// object is freed by another thread than the one that allocated it. The consumer also keeps
// every item's sum in one large table, live for the whole run: chaos migration always has
// large blocks to move (the items are small objects, which it leaves alone).
#include <condition_variable>
#include <cstdio>
#include <map>
#include <memory>
#include <mutex>
#include <queue>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

struct Item {
    int id;
    std::string name;
    std::vector<int> values;
    std::map<std::string, std::string> tags;
};

class Queue {
    std::mutex m;
    std::condition_variable cv;
    std::queue<std::unique_ptr<Item>> q;

  public:
    void push(std::unique_ptr<Item> it) {
        {
            std::lock_guard<std::mutex> g(m);
            q.push(std::move(it));
        }
        cv.notify_one();
    }
    std::unique_ptr<Item> pop() {
        std::unique_lock<std::mutex> g(m);
        cv.wait(g, [&] { return !q.empty(); });
        auto it = std::move(q.front());
        q.pop();
        return it;
    }
};

int main() {
    const int producers = 4, per = 20000, stages = 3;
    std::vector<Queue> queues(stages + 1);
    std::vector<std::thread> threads;
    for (int p = 0; p < producers; p++)
        threads.emplace_back([&, p] {
            for (int i = 0; i < per; i++) {
                auto it = std::make_unique<Item>();
                it->id = p * per + i;
                it->name = "item-" + std::to_string(p) + "-" + std::to_string(i);
                for (int k = 0; k < (i % 50); k++)
                    it->values.push_back(k * p + i);
                if (i % 3 == 0)
                    it->tags["origin"] = std::string(i % 200, 'x');
                queues[0].push(std::move(it));
            }
        });
    for (int s = 0; s < stages; s++)
        threads.emplace_back([&, s] {
            for (int i = 0; i < producers * per; i++) {
                auto it = queues[s].pop();
                it->name += "/stage" + std::to_string(s);
                it->values.resize(it->values.size() + s * 7, s);
                it->tags["stage" + std::to_string(s)] = it->name.substr(0, 12);
                queues[s + 1].push(std::move(it));
            }
        });
    std::unordered_map<std::string, long> sums;
    std::vector<long> by_item(producers * per);
    long total = 0, tags = 0;
    for (int i = 0; i < producers * per; i++) {
        auto it = queues[stages].pop();
        long sum = 0;
        for (int v : it->values)
            sum += v;
        sums[it->name.substr(0, it->name.find('-', 5))] += sum;
        total += sum;
        tags += it->tags.size();
        by_item[it->id] = sum;
    }
    for (auto &t : threads)
        t.join();
    std::map<std::string, long> sorted(sums.begin(), sums.end());
    for (auto &kv : sorted)
        std::printf("%s %ld\n", kv.first.c_str(), kv.second);
    unsigned long check = 0;
    for (size_t i = 0; i < by_item.size(); i++)
        check = check * 31 + (unsigned long)by_item[i];
    std::printf("total %ld tags %ld check %lu\n", total, tags, check);
    return 0;
}
