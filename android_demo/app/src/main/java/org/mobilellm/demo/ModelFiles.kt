package org.mobilellm.demo

import android.content.Context
import java.io.File
import java.security.MessageDigest

/**
 * LlmModule loads from file paths, so the bundle is copied out of the APK's assets once into
 * the app's files directory, and every file is checked against bundle.json's sha256 and size.
 */
object ModelFiles {
    fun install(context: Context): Pair<BundleManifest, File> {
        val assets = context.assets
        val manifestText = assets.open("${BundleManifest.DIRECTORY}/${BundleManifest.FILE_NAME}")
            .bufferedReader().use { it.readText() }
        val manifest = BundleManifest.parse(manifestText)
        val target = File(context.filesDir, BundleManifest.DIRECTORY)
        for ((path, check) in manifest.integrity) {
            val out = File(target, path)
            if (!(out.isFile && out.length() == check.bytes && sha256(out) == check.sha256)) {
                out.parentFile?.mkdirs()
                val partial = File(out.path + ".partial")
                assets.open("${BundleManifest.DIRECTORY}/$path").use { input ->
                    partial.outputStream().use { input.copyTo(it, 1 shl 20) }
                }
                check(partial.length() == check.bytes) { "$path: ${partial.length()} bytes, bundle.json says ${check.bytes}" }
                check(sha256(partial) == check.sha256) { "$path does not match its sha256 in bundle.json" }
                check(partial.renameTo(out)) { "cannot move $path into place" }
            }
        }
        return manifest to target
    }

    private fun sha256(file: File): String {
        val digest = MessageDigest.getInstance("SHA-256")
        file.inputStream().use { input ->
            val buffer = ByteArray(1 shl 20)
            while (true) {
                val n = input.read(buffer)
                if (n < 0) break
                digest.update(buffer, 0, n)
            }
        }
        return digest.digest().joinToString("") { "%02x".format(it) }
    }
}
