package flowstage.peers;

import java.time.Duration;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.LinkedHashSet;
import java.util.List;
import java.util.Locale;
import java.util.Set;
import java.util.concurrent.TimeUnit;

import com.typesafe.config.Config;
import com.typesafe.config.ConfigFactory;

import org.apache.pekko.NotUsed;
import org.apache.pekko.actor.ActorSystem;
import org.apache.pekko.japi.Pair;
import org.apache.pekko.stream.Attributes;
import org.apache.pekko.stream.ClosedShape;
import org.apache.pekko.stream.FanInShape2;
import org.apache.pekko.stream.Materializer;
import org.apache.pekko.stream.UniformFanInShape;
import org.apache.pekko.stream.UniformFanOutShape;
import org.apache.pekko.stream.javadsl.Balance;
import org.apache.pekko.stream.javadsl.Broadcast;
import org.apache.pekko.stream.javadsl.Flow;
import org.apache.pekko.stream.javadsl.GraphDSL;
import org.apache.pekko.stream.javadsl.Merge;
import org.apache.pekko.stream.javadsl.RunnableGraph;
import org.apache.pekko.stream.javadsl.Sink;
import org.apache.pekko.stream.javadsl.Source;
import org.apache.pekko.stream.javadsl.Zip;

/**
 * Peer benchmark: flowstage's benchmark scenarios written in Apache Pekko Streams (javadsl),
 * default materializer settings (everything fused into one actor unless the scenario adds
 * {@code .async()}).
 *
 * <p>Every scenario is run WARMUP times (JIT warm-up, not reported), then ITERS times; the median
 * wall time of the measured runs is reported. Each run's result is checked against a value
 * computed by a plain loop, so a scenario that silently drops or duplicates elements fails loudly
 * instead of reporting a flattering number.
 *
 * <p>Stdout carries only machine-readable lines:
 * <pre>
 * # header ...
 * PEER pekko &lt;scenario&gt; &lt;items_per_second&gt; &lt;median_seconds&gt; &lt;items&gt;
 * </pre>
 *
 * <p>Environment: ITEMS (default 10000000; '_' and ',' allowed as separators), WARMUP (default 3),
 * ITERS (default 5), SCENARIOS (comma list, default all), VERBOSE=1 (per-run times on stderr).
 */
public final class Main {

  static final List<String> ALL_SCENARIOS =
      List.of("chain", "async_boundary", "async_boundary_buf1024", "broadcast_zip", "balance_merge");

  /** One run of a scenario; returns its checksum. */
  @FunctionalInterface
  interface Run {
    long run() throws Exception;
  }

  private static final Duration RUN_TIMEOUT = Duration.ofMinutes(5);

  public static void main(String[] args) throws Exception {
    final long items = envLong("ITEMS", 10_000_000L);
    final int warmup = (int) envLong("WARMUP", 3);
    final int iters = (int) envLong("ITERS", 5);
    final boolean verbose = "1".equals(System.getenv("VERBOSE"));
    if (items < 1 || items > Integer.MAX_VALUE) {
      fail("ITEMS must be in 1.." + Integer.MAX_VALUE + " (Source.range is over int), got " + items);
    }
    if (warmup < 0 || iters < 1) {
      fail("need WARMUP >= 0 and ITERS >= 1, got WARMUP=" + warmup + " ITERS=" + iters);
    }
    final Set<String> selected = selectedScenarios();
    final int n = (int) items;

    // Quiet system: nothing but our lines on stdout (run.sh additionally filters stdout).
    final Config config =
        ConfigFactory.parseString(
                String.join(
                    "\n",
                    "pekko.loglevel = WARNING",
                    "pekko.stdout-loglevel = WARNING",
                    "pekko.log-dead-letters = off",
                    "pekko.log-dead-letters-during-shutdown = off",
                    "pekko.jvm-exit-on-fatal-error = on"))
            .withFallback(ConfigFactory.load());
    final ActorSystem system = ActorSystem.create("pekko-peer-bench", config);
    final Materializer mat = Materializer.matFromSystem(system);

    System.out.printf(
        Locale.ROOT,
        "# peer=pekko pekko_version=%s scala=%s java=%s vm=\"%s\" cpus=%d max_heap_mb=%d"
            + " items=%d warmup=%d iters=%d stat=median%n",
        org.apache.pekko.Version.current(),
        scala.util.Properties.versionNumberString(),
        System.getProperty("java.version"),
        System.getProperty("java.vm.name"),
        Runtime.getRuntime().availableProcessors(),
        Runtime.getRuntime().maxMemory() / (1024 * 1024),
        items,
        warmup,
        iters);
    System.out.flush();

    try {
      // Expected checksums, computed with plain loops over the same function bodies.
      long expChain = 0L;
      {
        long acc = 0L; // scan state
        for (int x = 0; x < n; x++) {
          long y = x * 3L;
          if (y % 2 == 0) {
            acc = acc + y;
            expChain = expChain ^ acc;
          }
        }
        // scan emits its zero first: fold(0 ^ 0) does not change the result.
      }
      final long nl = items;
      final long expBroadcastZip = 3L * (nl * (nl - 1) / 2) + nl; // sum of (x+1) + (2x)
      final long expCount = nl;

      for (String s : ALL_SCENARIOS) {
        if (!selected.contains(s)) continue;
        switch (s) {
          case "chain":
            bench(s, items, warmup, iters, verbose, expChain, () -> chain(n, mat));
            break;
          case "async_boundary":
            bench(s, items, warmup, iters, verbose, expCount, () -> asyncBoundary(n, -1, mat));
            break;
          case "async_boundary_buf1024":
            bench(s, items, warmup, iters, verbose, expCount, () -> asyncBoundary(n, 1024, mat));
            break;
          case "broadcast_zip":
            bench(s, items, warmup, iters, verbose, expBroadcastZip, () -> broadcastZip(n, mat));
            break;
          case "balance_merge":
            bench(s, items, warmup, iters, verbose, expCount, () -> balanceMerge(n, mat));
            break;
          default:
            throw new IllegalStateException(s);
        }
      }
    } finally {
      system.terminate();
      system.getWhenTerminated().toCompletableFuture().get(30, TimeUnit.SECONDS);
    }
  }

  // ---------------------------------------------------------------------------------------------
  // Scenarios. Source.range(start, end) is inclusive, so [0, n-1] is exactly n elements.

  /** map(x*3) -> filter(even) -> scan(+, 0) -> fold(^, 0); all fused in one island. */
  static long chain(int n, Materializer mat) throws Exception {
    return Source.range(0, n - 1)
        .map(x -> x * 3L)
        .filter(x -> x % 2 == 0)
        .scan(0L, (acc, x) -> acc + x)
        .runWith(Sink.fold(0L, (acc, x) -> acc ^ x), mat)
        .toCompletableFuture()
        .get(RUN_TIMEOUT.toSeconds(), TimeUnit.SECONDS);
  }

  /**
   * range -> .async() -> fold(count). The only async boundary is between the source island and
   * the sink island. With {@code inputBuffer > 0} the downstream (sink) side of the boundary gets
   * Attributes.inputBuffer(b, b), which is where Pekko sizes the boundary's buffer (default 16,
   * pekko.stream.materializer.max-input-buffer-size).
   */
  static long asyncBoundary(int n, int inputBuffer, Materializer mat) throws Exception {
    Sink<Integer, java.util.concurrent.CompletionStage<Long>> count =
        Sink.fold(0L, (acc, x) -> acc + 1);
    if (inputBuffer > 0) {
      count = count.addAttributes(Attributes.inputBuffer(inputBuffer, inputBuffer));
    }
    return Source.range(0, n - 1)
        .async()
        .runWith(count, mat)
        .toCompletableFuture()
        .get(RUN_TIMEOUT.toSeconds(), TimeUnit.SECONDS);
  }

  /** range -> Broadcast(2) -> {map(x+1), map(x*2)} -> Zip -> fold(sum of a+b). Fused. */
  static long broadcastZip(int n, Materializer mat) throws Exception {
    final Sink<Pair<Integer, Integer>, java.util.concurrent.CompletionStage<Long>> sink =
        Sink.fold(0L, (acc, p) -> acc + (long) p.first() + (long) p.second());
    final RunnableGraph<java.util.concurrent.CompletionStage<Long>> g =
        RunnableGraph.fromGraph(
            GraphDSL.create(
                sink,
                (b, out) -> {
                  final UniformFanOutShape<Integer, Integer> bcast = b.add(Broadcast.create(2));
                  final FanInShape2<Integer, Integer, Pair<Integer, Integer>> zip =
                      b.add(Zip.create());
                  final Flow<Integer, Integer, NotUsed> plusOne =
                      Flow.of(Integer.class).map(x -> x + 1);
                  final Flow<Integer, Integer, NotUsed> timesTwo =
                      Flow.of(Integer.class).map(x -> x * 2);
                  b.from(b.add(Source.range(0, n - 1))).viaFanOut(bcast);
                  b.from(bcast).via(b.add(plusOne)).toInlet(zip.in0());
                  b.from(bcast).via(b.add(timesTwo)).toInlet(zip.in1());
                  b.from(zip.out()).to(out);
                  return ClosedShape.getInstance();
                }));
    return g.run(mat).toCompletableFuture().get(RUN_TIMEOUT.toSeconds(), TimeUnit.SECONDS);
  }

  /** range -> Balance(2) -> map(x+1) on each output -> Merge(2) -> fold(count). Fused. */
  static long balanceMerge(int n, Materializer mat) throws Exception {
    final Sink<Integer, java.util.concurrent.CompletionStage<Long>> sink =
        Sink.fold(0L, (acc, x) -> acc + 1);
    final RunnableGraph<java.util.concurrent.CompletionStage<Long>> g =
        RunnableGraph.fromGraph(
            GraphDSL.create(
                sink,
                (b, out) -> {
                  final UniformFanOutShape<Integer, Integer> balance = b.add(Balance.create(2));
                  final UniformFanInShape<Integer, Integer> merge = b.add(Merge.create(2));
                  b.from(b.add(Source.range(0, n - 1))).viaFanOut(balance);
                  for (int i = 0; i < 2; i++) {
                    b.from(balance)
                        .via(b.add(Flow.of(Integer.class).map(x -> x + 1)))
                        .toFanIn(merge);
                  }
                  b.from(merge).to(out);
                  return ClosedShape.getInstance();
                }));
    return g.run(mat).toCompletableFuture().get(RUN_TIMEOUT.toSeconds(), TimeUnit.SECONDS);
  }

  // ---------------------------------------------------------------------------------------------

  static void bench(
      String name, long items, int warmup, int iters, boolean verbose, long expected, Run run)
      throws Exception {
    for (int i = 0; i < warmup; i++) {
      long t0 = System.nanoTime();
      long got = run.run();
      long dt = System.nanoTime() - t0;
      check(name, "warm-up " + i, expected, got);
      if (verbose) {
        System.err.printf(Locale.ROOT, "[pekko] %s warm-up %d: %.6f s%n", name, i, dt / 1e9);
      }
    }
    final long[] times = new long[iters];
    for (int i = 0; i < iters; i++) {
      long t0 = System.nanoTime();
      long got = run.run();
      times[i] = System.nanoTime() - t0;
      check(name, "run " + i, expected, got);
      if (verbose) {
        System.err.printf(Locale.ROOT, "[pekko] %s run %d: %.6f s%n", name, i, times[i] / 1e9);
      }
    }
    Arrays.sort(times);
    final double median =
        (iters % 2 == 1)
            ? times[iters / 2] / 1e9
            : (times[iters / 2 - 1] + times[iters / 2]) / 2e9;
    final double ips = items / median;
    System.out.printf(
        Locale.ROOT, "PEER pekko %s %.0f %.9f %d%n", name, ips, median, items);
    System.out.flush();
  }

  static void check(String name, String what, long expected, long got) {
    if (expected != got) {
      fail(name + " " + what + ": checksum " + got + " != expected " + expected);
    }
  }

  static void fail(String msg) {
    System.err.println("pekko peer bench: " + msg);
    System.exit(2);
  }

  static long envLong(String key, long dflt) {
    final String v = System.getenv(key);
    if (v == null || v.isBlank()) return dflt;
    try {
      return Long.parseLong(v.trim().replace("_", "").replace(",", ""));
    } catch (NumberFormatException e) {
      fail(key + " is not an integer: " + v);
      return dflt; // unreachable
    }
  }

  static Set<String> selectedScenarios() {
    final String v = System.getenv("SCENARIOS");
    if (v == null || v.isBlank()) return new LinkedHashSet<>(ALL_SCENARIOS);
    final Set<String> out = new LinkedHashSet<>();
    final List<String> unknown = new ArrayList<>();
    for (String s : v.split(",")) {
      s = s.trim();
      if (s.isEmpty()) continue;
      if (ALL_SCENARIOS.contains(s)) out.add(s);
      else unknown.add(s);
    }
    if (!unknown.isEmpty()) fail("unknown scenario(s) " + unknown + "; known: " + ALL_SCENARIOS);
    return out;
  }
}
