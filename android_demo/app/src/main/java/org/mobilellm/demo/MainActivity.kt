package org.mobilellm.demo

import android.os.Bundle
import android.os.Debug
import android.widget.Button
import android.widget.EditText
import android.widget.TextView
import androidx.appcompat.app.AppCompatActivity
import kotlinx.coroutines.CoroutineScope
import kotlinx.coroutines.Dispatchers
import kotlinx.coroutines.launch
import kotlinx.coroutines.withContext
import org.json.JSONObject
import org.pytorch.executorch.extension.llm.LlmCallback
import org.pytorch.executorch.extension.llm.LlmModule
import java.io.File

/** A chat screen: streams tokens from the bundled model and shows tokens/s and memory. */
class MainActivity : AppCompatActivity(), LlmCallback {
    private lateinit var transcript: TextView
    private lateinit var stats: TextView
    private var module: LlmModule? = null
    private var manifest: BundleManifest? = null
    private val scope = CoroutineScope(Dispatchers.Main)

    override fun onCreate(savedInstanceState: Bundle?) {
        super.onCreate(savedInstanceState)
        setContentView(R.layout.activity_main)
        transcript = findViewById(R.id.transcript)
        stats = findViewById(R.id.stats)
        val info = findViewById<TextView>(R.id.model_info)
        val prompt = findViewById<EditText>(R.id.prompt)
        val button = findViewById<Button>(R.id.generate)
        button.isEnabled = false
        scope.launch {
            val loaded = withContext(Dispatchers.IO) { load() }
            manifest = loaded.first
            module = loaded.second
            info.text = "${loaded.first.modelName} · ${loaded.first.scheme} · context ${loaded.first.contextLength}"
            button.isEnabled = true
        }
        button.setOnClickListener {
            val text = prompt.text.toString()
            val m = manifest ?: return@setOnClickListener
            transcript.append("\n> $text\n")
            button.isEnabled = false
            scope.launch {
                withContext(Dispatchers.IO) {
                    // seqLen counts the prompt too; the bundle says how many new tokens to allow.
                    module?.generate(text, minOf(m.contextLength, m.maxNewTokens + text.length), this@MainActivity, false)
                }
                button.isEnabled = true
            }
        }
    }

    private fun load(): Pair<BundleManifest, LlmModule> {
        val (m, dir) = ModelFiles.install(this)
        val llm = LlmModule(
            File(dir, m.program).path, File(dir, m.tokenizer).path, m.temperature, File(dir, m.data).path,
        )
        val status = llm.load()
        check(status == 0) { "LlmModule.load failed with status $status" }
        return m to llm
    }

    override fun onResult(result: String) {
        runOnUiThread { transcript.append(result) }
    }

    /** The runner's statistics JSON: the same fields `mobilellm-export bench` parses. */
    override fun onStats(statsJson: String) {
        val s = JSONObject(statsJson)
        val decodeMs = s.getLong("inference_end_ms") - s.getLong("prompt_eval_end_ms")
        val tokensPerSecond = if (decodeMs > 0) 1000.0 * s.getInt("generated_tokens") / decodeMs else 0.0
        val rssMb = Debug.getNativeHeapAllocatedSize() / 1e6
        runOnUiThread { stats.text = "%.1f tokens/s · native heap %.0f MB".format(tokensPerSecond, rssMb) }
    }

    override fun onDestroy() {
        module?.resetNative()
        super.onDestroy()
    }
}
