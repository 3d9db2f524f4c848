package org.mobilellm.demo

import androidx.test.ext.junit.runners.AndroidJUnit4
import androidx.test.platform.app.InstrumentationRegistry
import org.junit.Assert.assertTrue
import org.junit.Test
import org.junit.runner.RunWith
import org.pytorch.executorch.extension.llm.LlmCallback
import org.pytorch.executorch.extension.llm.LlmModule
import java.io.File

/**
 * Benchmark entry point: `./gradlew connectedAndroidTest` (or `adb shell am instrument -w
 * org.mobilellm.demo.test/androidx.test.runner.AndroidJUnitRunner`) generates from the bundled
 * model and prints the runner's statistics as `PyTorchObserver {json}` to logcat and the
 * instrumentation output: the line `mobilellm-export bench --target adb` parses.
 */
@RunWith(AndroidJUnit4::class)
class BenchmarkTest {
    @Test
    fun generatesAndReportsStatistics() {
        val context = InstrumentationRegistry.getInstrumentation().targetContext
        val (manifest, dir) = ModelFiles.install(context)
        val llm = LlmModule(
            File(dir, manifest.program).path, File(dir, manifest.tokenizer).path, 0.0f, File(dir, manifest.data).path,
        )
        assertTrue(llm.load() == 0)
        val collected = StringBuilder()
        var statistics = ""
        llm.generate("Return the number of", minOf(manifest.contextLength, 96), object : LlmCallback {
            override fun onResult(result: String) { collected.append(result) }
            override fun onStats(statsJson: String) { statistics = statsJson }
        }, false)
        println("PyTorchObserver $statistics")
        android.util.Log.i("MobileLLMBenchmark", "PyTorchObserver $statistics")
        assertTrue(collected.isNotEmpty() && statistics.isNotEmpty())
        llm.resetNative()
    }
}
