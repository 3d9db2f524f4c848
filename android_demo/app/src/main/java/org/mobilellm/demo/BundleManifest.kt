package org.mobilellm.demo

import org.json.JSONObject

/**
 * bundle.json as written by `mobilellm-export bundle` (schema:
 * mobilellm_export/schemas/bundle-manifest.schema.json). The app finds every file through it;
 * no model file name is hard-coded here.
 */
data class FileCheck(val sha256: String, val bytes: Long)

data class BundleManifest(
    val schemaVersion: Int,
    val modelName: String,
    val backend: String,
    val scheme: String,
    val contextLength: Int,
    val bosId: Int,
    val eosIds: List<Int>,
    val maxNewTokens: Int,
    val temperature: Float,
    val program: String,
    val data: String,
    val tokenizer: String,
    val integrity: Map<String, FileCheck>,
    val totalBytes: Long,
) {
    companion object {
        const val FILE_NAME = "bundle.json"
        const val DIRECTORY = "model"

        fun parse(text: String): BundleManifest {
            val root = JSONObject(text)
            val version = root.getInt("schema_version")
            require(version == 1) { "unsupported bundle schema_version $version" }
            val backend = root.getString("backend")
            require(backend == "executorch") { "this app runs ExecuTorch bundles, not $backend" }
            val generation = root.getJSONObject("generation")
            val files = root.getJSONObject("files")
            val eos = root.getJSONArray("eos_ids")
            val checks = root.getJSONObject("integrity")
            val integrity = checks.keys().asSequence().associateWith { path ->
                val entry = checks.getJSONObject(path)
                FileCheck(entry.getString("sha256"), entry.getLong("bytes"))
            }
            return BundleManifest(
                schemaVersion = version,
                modelName = root.getString("model_name"),
                backend = backend,
                scheme = root.getString("scheme"),
                contextLength = root.getInt("context_length"),
                bosId = root.getInt("bos_id"),
                eosIds = (0 until eos.length()).map { eos.getInt(it) },
                maxNewTokens = generation.getInt("max_new_tokens"),
                temperature = generation.getDouble("temperature").toFloat(),
                program = files.getString("program"),
                data = files.getString("data"),
                tokenizer = files.getString("tokenizer"),
                integrity = integrity,
                totalBytes = root.getLong("total_bytes"),
            )
        }
    }
}
