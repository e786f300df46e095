package governedft.s3a;

import java.io.IOException;
import java.net.URI;
import java.net.http.HttpClient;
import java.net.http.HttpRequest;
import java.net.http.HttpResponse;
import java.time.Duration;
import java.time.Instant;
import java.util.concurrent.ConcurrentHashMap;
import org.apache.hadoop.conf.Configuration;
import software.amazon.awssdk.auth.credentials.AwsCredentials;
import software.amazon.awssdk.auth.credentials.AwsCredentialsProvider;
import software.amazon.awssdk.auth.credentials.AwsSessionCredentials;
import software.amazon.awssdk.core.exception.SdkClientException;
import software.amazon.awssdk.protocols.jsoncore.JsonNode;

/**
 * S3A credentials for one table or path, vended by the catalog to the job's principal: fetched from the credential
 * endpoint of the job's driver and fetched again before they end, in every JVM of the job (driver and executors).
 *
 * <p>The endpoint answers in the AWS container-credentials format and vends again whenever the credentials it holds
 * are within the renewal window of their end. This provider asks again once the credentials it holds are within
 * min(window, half the lifetime it saw) of their end, so a credential of any lifetime is replaced well before it
 * ends (a request signed just before still reaches the storage in time) and the endpoint is not asked on every
 * request. The catalog's secret never reaches this JVM: only the
 * endpoint's URL and its token, from S3A's per-bucket options. {@link VendedCredentialsClientFactory} puts it in.
 */
public final class VendedCredentialsProvider implements AwsCredentialsProvider {
  public static final String URL = "fs.s3a.governed-ft.credentials.url";
  public static final String TOKEN = "fs.s3a.governed-ft.credentials.token";
  public static final String RENEW_WITHIN = "fs.s3a.governed-ft.credentials.renew-within-seconds";

  /** One fetch per endpoint URL and JVM, shared by every S3A file system of the job in this JVM. */
  private static final ConcurrentHashMap<String, Held> HELD = new ConcurrentHashMap<>();

  private static final HttpClient HTTP =
      HttpClient.newBuilder().connectTimeout(Duration.ofSeconds(10)).build();

  private final String url;
  private final String token;
  private final long renewWithinMillis;

  private static final class Held {
    final AwsCredentials credentials;
    final long refreshAtMillis;

    Held(AwsCredentials credentials, long refreshAtMillis) {
      this.credentials = credentials;
      this.refreshAtMillis = refreshAtMillis;
    }
  }

  public VendedCredentialsProvider(URI bucket, Configuration conf) {
    this.url = conf.getTrimmed(URL, "");
    this.token = conf.getTrimmed(TOKEN, "");
    this.renewWithinMillis = conf.getLong(RENEW_WITHIN, 900) * 1000L;
    if (url.isEmpty() || token.isEmpty()) {
      throw new IllegalArgumentException(
          "S3A for " + bucket + " needs fs.s3a.bucket.<bucket>.governed-ft.credentials.url and .token: the job "
              + "sets them when it opens a table or path with vended credentials");
    }
  }

  @Override
  public AwsCredentials resolveCredentials() {
    long now = System.currentTimeMillis();
    return HELD.compute(url, (key, held) -> held == null || now >= held.refreshAtMillis ? fetch() : held)
        .credentials;
  }

  private Held fetch() {
    HttpRequest request =
        HttpRequest.newBuilder(URI.create(url))
            .timeout(Duration.ofSeconds(60))
            .header("Authorization", token)
            .GET()
            .build();
    HttpResponse<String> response;
    long asked = System.currentTimeMillis();
    try {
      response = HTTP.send(request, HttpResponse.BodyHandlers.ofString());
    } catch (IOException e) {
      throw SdkClientException.create("the job's credential endpoint " + url + " cannot be reached: " + e, e);
    } catch (InterruptedException e) {
      Thread.currentThread().interrupt();
      throw SdkClientException.create("interrupted while asking the job's credential endpoint " + url, e);
    }
    JsonNode body;
    try {
      body = JsonNode.parser().parse(response.body());
    } catch (RuntimeException e) {
      throw SdkClientException.create(
          "the job's credential endpoint " + url + " answered " + response.statusCode() + " without JSON", e);
    }
    if (response.statusCode() != 200) {
      throw SdkClientException.create(
          "the job's credential endpoint " + url + " answered " + response.statusCode() + ": "
              + text(body, "Message", "no message"));
    }
    Instant expiration = Instant.parse(text(body, "Expiration", null));
    long lifetime = Math.max(0L, expiration.toEpochMilli() - asked);
    AwsCredentials credentials =
        AwsSessionCredentials.create(
            text(body, "AccessKeyId", null), text(body, "SecretAccessKey", null), text(body, "Token", null));
    return new Held(credentials, expiration.toEpochMilli() - Math.min(renewWithinMillis, lifetime / 2));
  }

  private String text(JsonNode body, String field, String fallback) {
    return body.field(field)
        .filter(JsonNode::isString)
        .map(JsonNode::asString)
        .or(() -> java.util.Optional.ofNullable(fallback))
        .orElseThrow(
            () -> SdkClientException.create("the job's credential endpoint " + url + " sent no " + field));
  }

  @Override
  public String toString() {
    return "VendedCredentialsProvider(" + url + ")";
  }
}
