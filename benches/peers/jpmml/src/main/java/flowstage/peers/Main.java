package flowstage.peers;

import java.io.File;
import java.io.IOException;
import java.io.InputStream;
import java.lang.management.ManagementFactory;
import java.lang.management.ThreadMXBean;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.Objects;
import java.util.Properties;

import org.jpmml.evaluator.Evaluator;
import org.jpmml.evaluator.EvaluatorUtil;
import org.jpmml.evaluator.InputField;
import org.jpmml.evaluator.LoadingModelEvaluatorBuilder;

/**
 * Peer benchmark: JPMML-Evaluator scoring the tutorial wine PMML models over the wine rows, one
 * thread, the way flowstage-pmml's {@code pmml/benches/wine.rs} scores them.
 *
 * <p>Per model: load with {@link LoadingModelEvaluatorBuilder} (its defaults), prepare every row
 * ONCE as a {@code Map<String, ?>} argument map (input field name with spaces, as in the PMML →
 * {@code Double}), then time full passes of {@code EvaluatorUtil.decodeAll(evaluator.evaluate(args))}
 * over all rows. A JIT warm-up (unreported passes until the thread used WARMUP_SECONDS of CPU) precedes ITERS measured
 * samples; each sample repeats the pass enough times to last at least MIN_SECONDS. The median
 * sample's records per second is reported. The decoded results are folded into a checksum that is
 * printed (stderr) so the JIT cannot drop the work.
 *
 * <p>Stdout carries only machine-readable lines:
 * <pre>
 * # header ...
 * PEER jpmml &lt;model-file-stem&gt; &lt;records_per_second&gt; &lt;median_seconds_per_pass&gt; &lt;rows&gt; &lt;cpu_records_per_second&gt;
 * </pre>
 * The last column divides by this thread's CPU time instead of wall time (less sensitive to other
 * processes on a busy machine).
 *
 * <p>Arguments: PMML files (default: the 7 tutorial models in WINE_DIR). Environment: WINE_DIR
 * (default ../shared/data/wine relative to the repository root), CSV (default
 * WINE_DIR/winequality_red.csv), ROWS (default all), ITERS (default 5), MIN_SECONDS (0.5),
 * WARMUP_SECONDS (3), VERBOSE=1 (per-sample times on stderr).
 */
public final class Main {

  /** CSV columns in file order (no header in the file); the last one is the target. */
  static final List<String> COLUMNS =
      List.of(
          "fixed acidity",
          "volatile acidity",
          "citric acid",
          "residual sugar",
          "chlorides",
          "free sulfur dioxide",
          "total sulfur dioxide",
          "density",
          "pH",
          "sulphates",
          "alcohol",
          "quality");

  static final List<String> MODELS =
      List.of(
          "winequalityDecisionTreeClassification",
          "winequalityDesisionTreeRegression",
          "winequalityGeneralizedLinearRegressionGamma",
          "winequalityGeneralizedLinearRegressionGaussian",
          "winequalityLinearRegression",
          "winequalityMultilayerPerceptron",
          "winequalityRandonForrestClassification");

  /** Keeps the decoded results observable. */
  static volatile long sink;

  public static void main(String[] argv) throws Exception {
    final File wineDir = new File(envStr("WINE_DIR", defaultWineDir()));
    final File csv = new File(envStr("CSV", new File(wineDir, "winequality_red.csv").getPath()));
    final int iters = (int) envLong("ITERS", 5);
    final double minSeconds = envDouble("MIN_SECONDS", 0.5);
    final double warmupSeconds = envDouble("WARMUP_SECONDS", 3.0);
    final boolean verbose = "1".equals(System.getenv("VERBOSE"));
    if (iters < 1 || minSeconds <= 0 || warmupSeconds < 0) {
      fail("need ITERS >= 1, MIN_SECONDS > 0, WARMUP_SECONDS >= 0");
    }

    final List<File> models = new ArrayList<>();
    if (argv.length == 0) {
      for (String m : MODELS) models.add(new File(wineDir, m + ".pmml"));
    } else {
      for (String a : argv) models.add(new File(a));
    }
    for (File f : models) {
      if (!f.isFile()) fail("no such PMML file: " + f);
    }
    if (!csv.isFile()) fail("no such CSV file: " + csv);

    List<double[]> rows = readCsv(csv);
    final long rowsEnv = envLong("ROWS", rows.size());
    if (rowsEnv < 1) fail("ROWS must be >= 1");
    if (rowsEnv < rows.size()) rows = rows.subList(0, (int) rowsEnv);

    System.out.printf(
        Locale.ROOT,
        "# peer=jpmml jpmml_version=%s java=%s vm=\"%s\" cpus=%d max_heap_mb=%d rows=%d iters=%d"
            + " min_seconds=%s warmup_seconds=%s stat=median threads=1%n",
        jpmmlVersion(),
        System.getProperty("java.version"),
        System.getProperty("java.vm.name"),
        Runtime.getRuntime().availableProcessors(),
        Runtime.getRuntime().maxMemory() / (1024 * 1024),
        rows.size(),
        iters,
        minSeconds,
        warmupSeconds);
    System.out.flush();

    for (File f : models) {
      bench(f, rows, iters, minSeconds, warmupSeconds, verbose);
    }
  }

  static void bench(
      File file,
      List<double[]> rows,
      int iters,
      double minSeconds,
      double warmupSeconds,
      boolean verbose)
      throws Exception {
    final String stem = file.getName().replaceFirst("\\.pmml$", "");
    final Evaluator evaluator = new LoadingModelEvaluatorBuilder().load(file).build();
    evaluator.verify();

    // Argument maps, prepared once: raw Doubles keyed by the PMML's input field names.
    final List<? extends InputField> inputs = evaluator.getInputFields();
    final int[] cols = new int[inputs.size()];
    final String[] names = new String[inputs.size()];
    for (int i = 0; i < cols.length; i++) {
      names[i] = inputs.get(i).getName();
      cols[i] = COLUMNS.indexOf(names[i]);
      if (cols[i] < 0) fail(stem + ": input field '" + names[i] + "' is not a CSV column");
    }
    @SuppressWarnings("unchecked")
    final Map<String, ?>[] args = new Map[rows.size()];
    for (int r = 0; r < args.length; r++) {
      final Map<String, Object> m = new LinkedHashMap<>();
      for (int i = 0; i < cols.length; i++) m.put(names[i], rows.get(r)[cols[i]]);
      args[r] = m;
    }

    // JIT warm-up: whole passes until this thread has used WARMUP_SECONDS of CPU (at least one
    // pass). CPU time, not wall time: on a busy machine a wall-clock warm-up can end before the
    // code was run often enough to be compiled.
    long checksum = 0;
    final long warmCpuEnd = cpuNanos() + (long) (warmupSeconds * 1e9);
    final long warmWallEnd = System.nanoTime() + (long) (20 * warmupSeconds * 1e9);
    int warmPasses = 0;
    do {
      checksum += pass(evaluator, args);
      warmPasses++;
    } while (cpuNanos() < warmCpuEnd && System.nanoTime() < warmWallEnd);

    // Repetitions per sample so that one sample lasts >= MIN_SECONDS.
    long t0 = System.nanoTime();
    checksum += pass(evaluator, args);
    final double onePass = Math.max((System.nanoTime() - t0) / 1e9, 1e-9);
    final int reps = (int) Math.max(1, Math.ceil(minSeconds / onePass));

    final double[] perPass = new double[iters];
    final double[] cpuPerPass = new double[iters];
    for (int i = 0; i < iters; i++) {
      final long c0 = cpuNanos();
      t0 = System.nanoTime();
      for (int k = 0; k < reps; k++) checksum += pass(evaluator, args);
      perPass[i] = (System.nanoTime() - t0) / 1e9 / reps;
      cpuPerPass[i] = Math.max(cpuNanos() - c0, 1) / 1e9 / reps;
      if (verbose) {
        System.err.printf(
            Locale.ROOT,
            "[jpmml] %s sample %d: %d passes, %.6f s/pass (cpu %.6f), %.0f records/s%n",
            stem,
            i,
            reps,
            perPass[i],
            cpuPerPass[i],
            args.length / perPass[i]);
      }
    }
    sink = checksum;
    final double median = median(perPass);
    final double cpuMedian = median(cpuPerPass);
    if (verbose) {
      System.err.printf(
          Locale.ROOT,
          "[jpmml] %s: warm-up %d passes, %d passes/sample, checksum %d%n",
          stem,
          warmPasses,
          reps,
          checksum);
    }
    System.out.printf(
        Locale.ROOT,
        "PEER jpmml %s %.0f %.9f %d %.0f%n",
        stem,
        args.length / median,
        median,
        args.length,
        args.length / cpuMedian);
    System.out.flush();
  }

  static final ThreadMXBean THREADS = ManagementFactory.getThreadMXBean();

  /** This thread's CPU time (wall time if the JVM cannot measure it). */
  static long cpuNanos() {
    final long t =
        THREADS.isCurrentThreadCpuTimeSupported() ? THREADS.getCurrentThreadCpuTime() : -1;
    return t >= 0 ? t : System.nanoTime();
  }

  static double median(double[] xs) {
    final double[] s = xs.clone();
    Arrays.sort(s);
    final int n = s.length;
    return (n % 2 == 1) ? s[n / 2] : (s[n / 2 - 1] + s[n / 2]) / 2;
  }

  /** One pass over all rows: evaluate + decode each; returns a checksum of the decoded values. */
  static long pass(Evaluator evaluator, Map<String, ?>[] args) {
    long h = 0;
    for (Map<String, ?> a : args) {
      final Map<String, ?> results = EvaluatorUtil.decodeAll(evaluator.evaluate(a));
      for (Object v : results.values()) h = 31 * h + Objects.hashCode(v);
    }
    return h;
  }

  static List<double[]> readCsv(File csv) throws IOException {
    final List<double[]> rows = new ArrayList<>();
    int lineNo = 0;
    for (String line : Files.readAllLines(csv.toPath(), StandardCharsets.UTF_8)) {
      lineNo++;
      if (line.isBlank()) continue;
      final String[] cells = line.split(";", -1);
      if (cells.length != COLUMNS.size()) {
        fail(csv + ":" + lineNo + ": expected " + COLUMNS.size() + " columns, got " + cells.length);
      }
      final double[] row = new double[cells.length];
      for (int i = 0; i < cells.length; i++) {
        try {
          row[i] = Double.parseDouble(cells[i].trim());
        } catch (NumberFormatException e) {
          fail(csv + ":" + lineNo + ": not a number: " + cells[i]);
        }
      }
      rows.add(row);
    }
    if (rows.isEmpty()) fail(csv + ": no rows");
    return rows;
  }

  static String jpmmlVersion() {
    try (InputStream in = Main.class.getResourceAsStream("/jpmml-peer.properties")) {
      if (in != null) {
        final Properties p = new Properties();
        p.load(in);
        final String v = p.getProperty("jpmml.version");
        if (v != null && !v.isBlank() && !v.contains("$")) return v;
      }
    } catch (IOException e) {
      // fall through
    }
    final String v = Evaluator.class.getPackage().getImplementationVersion();
    return v == null ? "unknown" : v;
  }

  /** run.sh sits in benches/peers/jpmml; the data lives next to the repository, ../shared. */
  static String defaultWineDir() {
    return "../../../../shared/data/wine"; // run.sh passes WINE_DIR explicitly
  }

  static void fail(String msg) {
    System.err.println("jpmml peer bench: " + msg);
    System.exit(2);
  }

  static String envStr(String key, String dflt) {
    final String v = System.getenv(key);
    return (v == null || v.isBlank()) ? dflt : v.trim();
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

  static double envDouble(String key, double dflt) {
    final String v = System.getenv(key);
    if (v == null || v.isBlank()) return dflt;
    try {
      return Double.parseDouble(v.trim());
    } catch (NumberFormatException e) {
      fail(key + " is not a number: " + v);
      return dflt; // unreachable
    }
  }
}
